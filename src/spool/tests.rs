//! Append, release, recovery and the on-disk format, on real files in a temporary directory.

use super::*;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use crate::shutdown::Readiness;

/// Opens the spool in `dir`, with a readiness latch that follows it as the app's does.
fn open(dir: &Path, max_bytes: u64) -> (Arc<Spool>, Recovery, Arc<Metrics>, Arc<Readiness>) {
    let metrics = Arc::new(Metrics::new(Vec::new()));
    let readiness = Arc::new(Readiness::new());
    readiness.kafka_reached();
    let (spool, recovery) = Spool::open(dir, max_bytes, metrics.clone()).expect("opens");
    readiness.follow_spool(spool.full());
    (spool, recovery, metrics, readiness)
}

fn entry(n: usize, size: usize) -> Entry {
    let mut body = format!("{{\"n\":{n}}}").into_bytes();
    body.resize(size.max(body.len()), b' ');
    Entry {
        app: "default".into(),
        received_at_ms: 1_795_000_000_000 + n as u64,
        body: body.into(),
        trace: None,
    }
}

/// Opens the spool in `dir` and appends three entries of 50 bytes, `entry(0..3, 50)`.
async fn three_entries(dir: &Path, max_bytes: u64) -> Arc<Spool> {
    let (spool, ..) = open(dir, max_bytes);
    for n in 0..3 {
        spool.append(entry(n, 50)).await.expect("appended");
    }
    spool
}

/// Spools three entries of 50 bytes in `dir`, closes the spool, and flips a byte in the
/// middle of the second one's payload; returns the segment.
async fn three_entries_with_the_second_corrupted(dir: &Path) -> PathBuf {
    let spool = three_entries(dir, 1 << 20).await;
    spool.close();
    drop(spool);
    let segment = segments(dir)[0].clone();
    let mut data = std::fs::read(&segment).expect("read");
    let second = frame::HEADER_BYTES + 1 + 7 + 8 + 50;
    data[second + 30] ^= 0xff;
    std::fs::write(&segment, &data).expect("write");
    segment
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn appended_entries_read_back_and_survive_a_reopen_until_released() {
    let dir = tempfile::tempdir().expect("dir");
    let (spool, ..) = open(dir.path(), 1 << 20);
    let mut seqs = Vec::new();
    for n in 0..5 {
        seqs.push(spool.append(entry(n, 100)).await.expect("appended"));
    }
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    assert_eq!(spool.read(3).expect("read"), Some(entry(3, 100)));
    spool.release(0);
    spool.release(2);
    spool.close();
    drop(spool);

    let (spool, recovery, ..) = open(dir.path(), 1 << 20);
    // The checkpoint covers entry 0, and entry 2 released out of order: 1, 3 and 4 replay.
    assert_eq!(recovery.replayed, 3);
    assert_eq!(spool.next_at_or_after(0), Some(1));
    assert_eq!(
        spool.next_at_or_after(2),
        Some(3),
        "2 is not forwarded again"
    );
    assert_eq!(spool.read(3).expect("read"), Some(entry(3, 100)));
    assert_eq!(spool.append(entry(9, 10)).await.expect("appended"), 5);
}

#[tokio::test]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().expect("dir");
    let (spool, _, metrics, _) = open(dir.path(), 64 << 20);
    let appends: Vec<_> = (0..200)
        .map(|n| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(entry(n, 1000)).await })
        })
        .collect();
    for append in appends {
        append.await.expect("task").expect("appended");
    }
    let fsyncs = metrics.spool_fsyncs.get();
    assert!(fsyncs < 200, "{fsyncs} fsyncs for 200 appends");
    assert_eq!(spool.unreleased(), 200);
}

#[tokio::test]
async fn released_segments_are_deleted_and_their_space_reclaimed() {
    let dir = tempfile::tempdir().expect("dir");
    // 256 KiB spool: 16 KiB segments.
    let (spool, _, metrics, _) = open(dir.path(), 256 * 1024);
    for n in 0..40 {
        spool.append(entry(n, 2000)).await.expect("appended");
    }
    assert!(segments(dir.path()).len() >= 4);
    let bytes_before = metrics.spool_bytes.get();
    for seq in 0..40 {
        spool.release(seq);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while segments(dir.path()).len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "released segments stay on disk"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(metrics.spool_bytes.get() < bytes_before / 2);
    assert_eq!(metrics.spool_entries.get(), 0);
}

#[tokio::test]
async fn a_full_spool_refuses_and_is_not_ready_until_below_the_low_water_mark() {
    let dir = tempfile::tempdir().expect("dir");
    let (spool, _, _, readiness) = open(dir.path(), 64 * 1024);
    let mut accepted = Vec::new();
    let refused = loop {
        match spool.append(entry(accepted.len(), 4000)).await {
            Ok(seq) => accepted.push(seq),
            Err(error) => break error,
        }
    };
    assert!(matches!(refused, SpoolError::Full { .. }), "{refused}");
    assert_eq!(readiness.check(), Err("the spool is full"));
    assert!(
        matches!(
            spool.append(entry(0, 10)).await,
            Err(SpoolError::Full { .. })
        ),
        "still full: no flapping"
    );
    for seq in &accepted {
        spool.release(*seq);
    }
    assert_eq!(readiness.check(), Ok(()));
    spool.append(entry(0, 4000)).await.expect("room again");
}

#[tokio::test]
async fn a_torn_write_at_the_end_is_truncated_on_open() {
    let dir = tempfile::tempdir().expect("dir");
    let spool = three_entries(dir.path(), 1 << 20).await;
    spool.close();
    drop(spool);
    let newest = segments(dir.path()).pop().expect("a segment");
    let whole = std::fs::metadata(&newest).expect("segment").len();
    let mut torn = Vec::new();
    frame::encode(3, &entry(3, 50), &mut torn);
    torn.truncate(torn.len() - 7);
    let mut file = OpenOptions::new().append(true).open(&newest).expect("open");
    file.write_all(&torn).expect("write");
    drop(file);

    let (spool, recovery, ..) = open(dir.path(), 1 << 20);
    assert_eq!(recovery.replayed, 3);
    assert_eq!(recovery.torn_bytes, torn.len() as u64);
    assert_eq!(spool.read(2).expect("read"), Some(entry(2, 50)));
    // Copied before the cut: damage to an acknowledged entry looks the same.
    assert_eq!(recovery.quarantined, 1);
    let kept: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("quarantine"))
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(&kept[0]).expect("read"), torn);
    assert_eq!(
        std::fs::metadata(&newest).expect("segment").len(),
        whole,
        "cut off"
    );
}

/// The bytes of `entry(n, 50)`'s frame: header, app length, "default", time, body.
const FRAME_OF_50: u64 = (frame::HEADER_BYTES + 1 + 7 + 8 + 50) as u64;

/// What a crash leaves of the spool open in `dir`: a copy of its segments and checkpoint
/// as they are on disk now (its lock is the live process's, not copied).
fn crash_image(dir: &Path) -> tempfile::TempDir {
    let image = tempfile::tempdir().expect("dir");
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_file() && path.file_name().is_some_and(|name| name != lock::LOCK_FILE) {
            std::fs::copy(&path, image.path().join(path.file_name().expect("a name")))
                .expect("copy");
        }
    }
    image
}

#[tokio::test]
async fn the_active_segment_keeps_zeroed_room_that_a_crash_leaves_and_recovery_cuts_off() {
    let dir = tempfile::tempdir().expect("dir");
    let spool = three_entries(dir.path(), 64 << 20).await;
    let active = segments(dir.path()).pop().expect("a segment");
    let data = std::fs::read(&active).expect("read");
    assert_eq!(
        data.len() as u64,
        FRAME_OF_50 + 1024 * 1024,
        "a mebibyte of room made after the first entry; the next two written into it"
    );
    assert!(frame::is_room(&data[3 * FRAME_OF_50 as usize..]));
    let status = status::read(dir.path()).expect("status");
    assert_eq!(
        (status.entries, status.bytes, status.unreadable.len()),
        (3, 3 * FRAME_OF_50, 0),
        "the room is neither entries nor unreadable"
    );

    let image = crash_image(dir.path());
    let (recovered, recovery, ..) = open(image.path(), 64 << 20);
    assert_eq!(
        recovery,
        Recovery {
            replayed: 3,
            torn_bytes: 0,
            quarantined: 0
        }
    );
    assert_eq!(recovered.read(2).expect("read"), Some(entry(2, 50)));
    assert_eq!(
        std::fs::metadata(image.path().join(active.file_name().expect("a name")))
            .expect("segment")
            .len(),
        3 * FRAME_OF_50,
        "the room cut off"
    );
    assert_eq!(recovered.append(entry(3, 50)).await.expect("appended"), 3);
    recovered.close();

    // Closing the spool cuts its room too.
    spool.close();
    assert_eq!(
        std::fs::metadata(&active).expect("segment").len(),
        3 * FRAME_OF_50
    );
}

#[tokio::test]
async fn a_segment_left_for_the_next_holds_its_entries_alone() {
    let dir = tempfile::tempdir().expect("dir");
    // Segments of 16 KiB, and as much room.
    let (spool, ..) = open(dir.path(), 16 * 16 * 1024);
    for n in 0..12 {
        spool.append(entry(n, 4000)).await.expect("appended");
    }
    let all = segments(dir.path());
    assert!(all.len() >= 2, "rolled: {all:?}");
    for left in &all[..all.len() - 1] {
        let data = std::fs::read(left).expect("read");
        let mut offset = 0;
        while offset < data.len() {
            match frame::scan(&data[offset..]) {
                frame::Scanned::Frame { len, .. } => offset += len,
                other => panic!("{} at {offset}: {other:?}", left.display()),
            }
        }
        assert!(offset > 0, "{} holds entries", left.display());
    }
    let active = std::fs::metadata(all.last().expect("a segment")).expect("segment");
    assert!(
        active.len() > 16 * 1024,
        "the active segment keeps its room"
    );
    spool.close();
}

#[tokio::test]
async fn a_write_torn_inside_the_room_is_cut_off_as_a_torn_tail() {
    let dir = tempfile::tempdir().expect("dir");
    let spool = three_entries(dir.path(), 64 << 20).await;
    let image = crash_image(dir.path());
    spool.close();
    let newest = segments(image.path()).pop().expect("a segment");
    let mut torn = Vec::new();
    frame::encode(3, &entry(3, 50), &mut torn);
    torn.truncate(torn.len() - 7);
    let file = OpenOptions::new().write(true).open(&newest).expect("open");
    file.write_all_at(&torn, 3 * FRAME_OF_50).expect("write");
    drop(file);

    let (spool, recovery, ..) = open(image.path(), 64 << 20);
    assert_eq!(
        recovery,
        Recovery {
            replayed: 3,
            torn_bytes: torn.len() as u64,
            quarantined: 1
        }
    );
    assert_eq!(spool.read(2).expect("read"), Some(entry(2, 50)));
    let kept: Vec<PathBuf> = std::fs::read_dir(image.path().join("quarantine"))
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read(&kept[0]).expect("read"),
        torn,
        "copied without the room's zeros"
    );
    assert_eq!(
        std::fs::metadata(&newest).expect("segment").len(),
        3 * FRAME_OF_50,
        "cut off"
    );
    spool.close();
}

#[tokio::test]
async fn corrupt_bytes_in_the_middle_are_quarantined_and_the_rest_replayed() {
    let dir = tempfile::tempdir().expect("dir");
    three_entries_with_the_second_corrupted(dir.path()).await;

    let (spool, recovery, metrics, _) = open(dir.path(), 1 << 20);
    assert_eq!(recovery.quarantined, 1);
    assert_eq!(recovery.replayed, 2);
    assert_eq!(metrics.spool_quarantined.get(), 1);
    assert_eq!(spool.read(0).expect("read"), Some(entry(0, 50)));
    assert_eq!(spool.read(2).expect("read"), Some(entry(2, 50)));
    assert_eq!(spool.next_at_or_after(1), Some(2));
    let quarantined: Vec<_> = std::fs::read_dir(dir.path().join("quarantine"))
        .expect("dir")
        .collect();
    assert_eq!(quarantined.len(), 1, "kept on disk");
}

#[tokio::test]
async fn corruption_that_cannot_be_quarantined_keeps_its_segment_and_does_not_stop_the_start() {
    let dir = tempfile::tempdir().expect("dir");
    let segment = three_entries_with_the_second_corrupted(dir.path()).await;
    // The quarantine folder cannot take anything.
    std::fs::remove_dir_all(dir.path().join("quarantine")).expect("remove");
    std::fs::write(dir.path().join("quarantine"), b"not a folder").expect("write");

    let (spool, recovery, ..) = open(dir.path(), 1 << 20);
    assert_eq!(recovery.quarantined, 1);
    assert_eq!(recovery.replayed, 2);
    for seq in [0, 2] {
        spool.release(seq);
    }
    spool.close();
    assert!(
        segment.exists(),
        "the segment with the corrupt bytes is kept"
    );
}

#[tokio::test]
async fn a_closed_spool_refuses_appends() {
    let dir = tempfile::tempdir().expect("dir");
    let (spool, ..) = open(dir.path(), 1 << 20);
    spool.close();
    assert!(matches!(
        spool.append(entry(0, 1)).await,
        Err(SpoolError::Closed)
    ));
}

/// A copy of the spool `tests/fixtures/<name>`, opened.
fn open_fixture(name: &str) -> (tempfile::TempDir, Arc<Spool>, Recovery) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = tempfile::tempdir().expect("dir");
    for file in std::fs::read_dir(fixture).expect("fixture") {
        let file = file.expect("entry");
        std::fs::copy(file.path(), dir.path().join(file.file_name())).expect("copy");
    }
    let metrics = Arc::new(Metrics::new(Vec::new()));
    let (spool, recovery) = Spool::open(dir.path(), 1 << 20, metrics).expect("opens");
    (dir, spool, recovery)
}

/// The on-disk format is a contract between releases: replicas are upgraded in place, and
/// a spool written by one release is replayed by the next. `tests/fixtures/spool-v1` was
/// written by the first release (five entries, the first two released and checkpointed, a
/// torn frame at the end); a change to the format keeps this test passing or adds a
/// tested migration.
mod format_v1 {
    use super::*;
    use crate::envelope;

    fn fixture(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[tokio::test]
    async fn a_spool_written_by_the_first_release_replays_the_same_records() {
        let (_dir, spool, recovery) = open_fixture("spool-v1");
        assert_eq!(
            recovery,
            Recovery {
                replayed: 3,
                torn_bytes: 75,
                // The torn frame, copied before the cut.
                quarantined: 1
            }
        );

        let routing = crate::config::KafkaSettings::default().routing();
        let expected_bodies = [
            (2, "shop", "multi_two_entries_three_fields_each.json"),
            (
                3,
                "default",
                "messages_image_escaped_unicode_and_slashes.json",
            ),
            (4, "default", "entry_without_changes.json"),
        ];
        let mut records = Vec::new();
        let mut next = 0;
        for (seq, app, name) in expected_bodies {
            assert_eq!(spool.next_at_or_after(next), Some(seq));
            let entry = spool.read(seq).expect("reads").expect("unreleased");
            assert_eq!(&*entry.app, app);
            assert_eq!(entry.received_at_ms, 1_795_000_000_000 + seq * 1000);
            let body = std::fs::read(fixture("tests/fixtures").join(name)).expect("body");
            assert_eq!(entry.body, body, "entry {seq} is {name} byte for byte");
            let received_at = crate::epoch::at(entry.received_at_ms);
            let split = envelope::to_records(&routing, &entry.app, &entry.body, received_at);
            assert_eq!(split.deadletter, None);
            for record in split.records {
                records.push((
                    seq,
                    record.topic.clone(),
                    record.key.clone().unwrap_or_default(),
                    record.header("wa-event-id").unwrap_or_default().to_owned(),
                ));
            }
            next = seq + 1;
        }
        assert_eq!(spool.next_at_or_after(next), None);
        let expected = [
            (
                2,
                "whatsapp.messages",
                "420123456789002:4915112345678",
                "125ada5cae02a1e14bfea76691624814",
            ),
            (
                2,
                "whatsapp.phone_number_quality_update",
                "310987654321001",
                "14d7ea759173852bc7571cb3a49d1019",
            ),
            (
                2,
                "whatsapp.message_template_status_update",
                "310987654321001",
                "ea761e9db2eb506d1df350a9dfd9c812",
            ),
            (
                2,
                "whatsapp.messages",
                "420123456789002:4915112345678",
                "af815028d2b95a78f07600f31078aa26",
            ),
            (
                2,
                "whatsapp.account_review_update",
                "310987654321002",
                "d0a68013b89a4f7d2fa36b82abdfabf0",
            ),
            (
                2,
                "whatsapp.template_category_update",
                "310987654321002",
                "6f75f7295a68b13cf172495e3ef7b445",
            ),
            (
                3,
                "whatsapp.messages",
                "420123456789002:4915112345678",
                "1f3b496a09e94ac68f9338525d514b80",
            ),
            (
                4,
                "whatsapp.unrouted",
                "310987654321001",
                "dfe17cec19ea87c6463c28e459d2084a",
            ),
        ]
        .map(|(seq, topic, key, id)| (seq, topic.to_owned(), key.to_owned(), id.to_owned()));
        assert_eq!(records, expected);

        // Released, the replayed entries leave an empty spool that takes new entries after
        // the fixture's last sequence number.
        for seq in 2..=4 {
            spool.release(seq);
        }
        assert_eq!(spool.unreleased(), 0);
        let appended = spool
            .append(Entry {
                app: "default".into(),
                received_at_ms: 1,
                body: bytes::Bytes::from_static(b"{}"),
                trace: None,
            })
            .await
            .expect("appended");
        assert_eq!(appended, 5);
    }
}

/// A checkpoint written while an entry is being synced must not cover it: after a crash the
/// entry would be skipped although it was acknowledged. Checkpoints are written in a tight
/// loop beside appends, each appended entry acknowledged and only then released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_checkpoint_covers_an_entry_before_it_is_released() {
    let dir = tempfile::tempdir().expect("dir");
    let (spool, ..) = open(dir.path(), 1 << 24);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let highest = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let checkpointer = {
        let (spool, stop, highest) = (spool.clone(), stop.clone(), highest.clone());
        let dir = dir.path().to_owned();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                spool.checkpoint().expect("checkpoint written");
                let watermark = checkpoint::read(&dir).watermark;
                highest.fetch_max(watermark, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    for n in 0..300 {
        let seq = spool.append(entry(n, 100)).await.expect("appended");
        let seen = highest.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            seen <= seq,
            "a checkpoint said entry {seq} was in Kafka before it was released (watermark {seen})"
        );
        spool.release(seq);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    checkpointer.join().expect("checkpointer");
}

/// Appended bodies stay in memory up to the read-ahead, and the forwarder's read takes
/// them from there once: the bytes on disk are not read for them.
#[tokio::test]
async fn the_first_read_of_a_fresh_entry_comes_from_memory_within_the_read_ahead() {
    let dir = tempfile::tempdir().expect("dir");
    let (spool, ..) = open(dir.path(), 1 << 20);
    spool.read_ahead(250);
    for n in 0..3 {
        spool.append(entry(n, 100)).await.expect("appended");
    }
    // Wipe the segment's bytes: only what is in memory still reads.
    let segment = segments(dir.path())[0].clone();
    let length = std::fs::metadata(&segment).expect("segment").len();
    std::fs::write(&segment, vec![0; length as usize]).expect("wiped");
    assert_eq!(spool.read(0).expect("read"), Some(entry(0, 100)));
    assert_eq!(spool.read(1).expect("read"), Some(entry(1, 100)));
    // The third did not fit in 250 bytes: read from disk, found wiped, quarantined.
    assert_eq!(spool.read(2).expect("read"), None);
    // Taken once: a second read (a retry) goes to disk.
    assert_eq!(spool.read(0).expect("read"), None);
    assert_eq!(spool.unreleased(), 1, "entry 1 waits for its release");
}

/// `tests/fixtures/spool-traced` was written by the first release with traces: a v2
/// checkpoint (entry 0 released), two entries written without a trace (`WABA` frames,
/// as with tracing off) and two with one (`WABT` frames), one of them with a
/// `tracestate` and one not sampled. Every later release reads it the same way.
mod format_traced {
    use super::*;
    use crate::trace::SpanContext;

    #[tokio::test]
    async fn a_spool_with_traced_entries_replays_each_entry_with_its_trace() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (_dir, spool, recovery) = super::open_fixture("spool-traced");
        assert_eq!(
            recovery,
            Recovery {
                replayed: 3,
                torn_bytes: 0,
                quarantined: 0
            }
        );
        let trace = |parent: &str, state: Option<&str>| {
            SpanContext::from_headers(parent.as_bytes(), state.map(str::as_bytes))
        };
        let expected = [
            (
                1,
                "default",
                "messages_image_escaped_unicode_and_slashes.json",
                None,
            ),
            (
                2,
                "shop",
                "multi_two_entries_three_fields_each.json",
                trace(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    Some("congo=t61rcWkgMzE"),
                ),
            ),
            (
                3,
                "default",
                "messages_status_sent.json",
                trace(
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                    None,
                ),
            ),
        ];
        let mut next = 0;
        for (seq, app, name, trace) in expected {
            assert_eq!(spool.next_at_or_after(next), Some(seq));
            let entry = spool.read(seq).expect("reads").expect("unreleased");
            assert_eq!(&*entry.app, app);
            assert_eq!(entry.received_at_ms, 1_796_000_000_000 + seq * 1000);
            let body = std::fs::read(root.join("tests/fixtures").join(name)).expect("body");
            assert_eq!(entry.body, body, "entry {seq} is {name} byte for byte");
            assert!(trace.is_none() || entry.trace.is_some(), "entry {seq}");
            assert_eq!(entry.trace, trace, "entry {seq}");
            next = seq + 1;
        }
        assert_eq!(spool.next_at_or_after(next), None);
    }
}
