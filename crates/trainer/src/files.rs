//! File and time helpers every record shares: atomic writes, the run
//! lock, JSON reads that name the file, and UTC time stamps. In a module of
//! their own so that whatever writes a file needs nothing else.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// An exclusive lock on a run directory (`run.lock`, an advisory file
/// lock the system drops when the process ends, even by SIGKILL), so that
/// two processes never train the same run.
pub fn lock_run(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("run.lock");
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    let f = greentrain_energy::files::open_no_follow(&mut options, &path)
        .map_err(|e| anyhow::anyhow!("{}: cannot open the run lock: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "{}: another greentrain process is training this run",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow::anyhow!(
            "{}: cannot lock the run: {e}",
            path.display()
        )),
    }
}

/// Atomic, fsync'd writes that replace a symlink rather than follow it
/// (one implementation, in the energy crate, for every record).
pub use greentrain_energy::files::write_atomic;

/// Space set aside in a run folder (`.greentrain-reserve`, 1 MiB) while a
/// run trains, so that a run that fills the disk can still record that it
/// failed: the failure path frees it just before writing its records.
pub struct Reserve(std::path::PathBuf);

impl Reserve {
    /// Name of the reserve file.
    pub const FILE: &'static str = ".greentrain-reserve";

    /// Sets the space aside (written, not sparse, and synced); `None` when
    /// the disk has no room for it either.
    pub fn make(dir: &Path) -> Option<Self> {
        let path = dir.join(Self::FILE);
        // Not zeros: a compressing file system would store them in nothing.
        let bytes: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        write_atomic(&path, &bytes).ok().map(|()| Self(path))
    }

    /// Gives the space back (before the records of a failure; at the end).
    pub fn release(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as f64)
        .unwrap_or(0.0)
}

/// A time as RFC 3339 UTC (`2026-11-27T05:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    greentrain_energy::carbon::format_time(unix(t))
}

/// Compact UTC stamp for directory names (`20261127T050000Z`).
pub fn stamp(t: SystemTime) -> String {
    rfc3339(t).replace(['-', ':'], "")
}

/// Reads one of greentrain's JSON files; errors name the file and say
/// whether it could not be read or is not `what`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not {what}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_755_600); // 2026-11-27T05:00:00Z
        assert_eq!(rfc3339(t), "2026-11-27T05:00:00Z");
        assert_eq!(stamp(t), "20261127T050000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn a_reserve_holds_a_mebibyte_until_released() {
        let d = tempfile::tempdir().unwrap();
        let r = Reserve::make(d.path()).unwrap();
        let p = d.path().join(Reserve::FILE);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
        r.release();
        assert!(!p.exists());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
