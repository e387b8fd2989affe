//! Writes into a folder other people may share (a run folder on a cluster's
//! file system): never through a symlink planted there, never through a
//! fixed temporary name, and on disk before they are reported as written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file created
/// exclusively under a random name in the same folder, fsync'd, then renamed
/// over `path` (a symlink at `path` is replaced, not followed), and the
/// folder fsync'd, so a reader sees the old file or the new one and a crash
/// leaves no half-written record.
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
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Opens `path` with `options`, refusing a symlink at `path` (the open
/// fails with a message naming it) instead of following it.
pub fn open_no_follow(options: &mut OpenOptions, path: &Path) -> std::io::Result<File> {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NOFOLLOW);
    #[cfg(not(unix))]
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(symlink_refused(path));
    }
    options.open(path).map_err(|e| {
        let symlink = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if symlink {
            symlink_refused(path)
        } else {
            e
        }
    })
}

fn symlink_refused(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "{} is a symlink: refusing to write through it (remove it; greentrain creates its own files)",
            path.display()
        ),
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_planted_symlink_is_neither_followed_nor_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = d.path().join("emissions.csv");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        // An append through the link is refused, the target untouched.
        let e = open_no_follow(OpenOptions::new().create(true).append(true), &link).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        // An atomic write replaces the link itself.
        write_atomic(&link, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "a temporary file was left behind");
    }
}
