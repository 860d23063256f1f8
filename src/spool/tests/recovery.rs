//! Recovery at open: torn tails, corrupt bytes, and the zeroed room a crash leaves.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;

use super::*;

/// The bytes of `entry(n, 50)`'s frame: header, app length, "default", time, body.
const FRAME_OF_50: u64 = (frame::HEADER_BYTES + 1 + 7 + 8 + 50) as u64;

/// Spools three entries of 50 bytes in `dir`, closes the spool, and flips a byte in the
/// middle of the second one's payload; returns the segment.
async fn three_entries_with_the_second_corrupted(dir: &Path) -> PathBuf {
    let spool = three_entries(dir, 1 << 20).await;
    spool.close();
    drop(spool);
    let segment = segments(dir)[0].clone();
    let mut data = std::fs::read(&segment).expect("read");
    data[FRAME_OF_50 as usize + 30] ^= 0xff;
    std::fs::write(&segment, &data).expect("write");
    segment
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
