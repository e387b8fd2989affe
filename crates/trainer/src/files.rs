//! File and time helpers every record shares: atomic writes, the run
//! lock, JSON reads that name the file, and UTC time stamps. In a module of
//! their own so that whatever writes a file needs nothing else.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// An exclusive lock on a run directory (`run.lock`, an advisory file
/// lock the system drops when the process ends, even by SIGKILL), so that
/// two processes never train the same run.
pub fn lock_run(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("run.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
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

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// folder, fsync'd, then renamed over `path`, so a reader sees either the old
/// or the new file and a crash leaves no half-written record.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".greentrain-").suffix(".tmp");
    // Records are meant to be shared: tempfile's default is owner-only.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
