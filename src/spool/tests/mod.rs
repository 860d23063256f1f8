//! Append, release, recovery and the on-disk format, on real files in a temporary directory:
//! the spool's life here, what recovery makes of damaged or crashed segments in
//! [`recovery`], and spools written by earlier releases in [`formats`].

mod formats;
mod recovery;

use super::*;
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
async fn a_closed_spool_refuses_appends() {
    let dir = tempfile::tempdir().expect("dir");
    let (spool, ..) = open(dir.path(), 1 << 20);
    spool.close();
    assert!(matches!(
        spool.append(entry(0, 1)).await,
        Err(SpoolError::Closed)
    ));
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
