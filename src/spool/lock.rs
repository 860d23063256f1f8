//! One process per spool directory: `serve` and `spool drain` hold an exclusive `flock` on
//! `{dir}/lock`, with their pid written inside. The kernel drops the lock with the process,
//! however it ends, so a `kill -9` never blocks the next start.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::SpoolError;

/// The lock's file, relative to the spool directory.
pub(super) const LOCK_FILE: &str = "lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

/// Takes the lock on `dir`, or says which process holds it.
pub fn acquire(dir: &Path) -> Result<SpoolLock, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            write!(file, "{}", std::process::id())?;
            file.sync_data()?;
            Ok(SpoolLock { _file: file })
        }
        Err(TryLockError::WouldBlock) => Err(SpoolError::Locked {
            dir: dir.to_owned(),
            pid: std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse().ok()),
        }),
        Err(TryLockError::Error(error)) => Err(error.into()),
    }
}

/// The process that holds the lock on `dir` now, if one does, read from the kernel's
/// table of locks (`/proc/locks`) without touching the lock: safe beside a running
/// gateway.
pub fn holder(dir: &Path) -> Option<u32> {
    let inode = std::fs::metadata(dir.join(LOCK_FILE)).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // `1: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF`; waiters carry a `->`.
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, device_inode, ..] => {
                let held = device_inode.rsplit(':').next()?.parse::<u64>().ok()? == inode;
                held.then(|| pid.parse().ok()).flatten()
            }
            _ => None,
        }
    })
}
