//! An append-only journal of running totals, so that energy used by a
//! process that is killed (SIGKILL, out of memory, a lost machine) is not
//! lost with it: every few seconds one JSON line is appended and fsync'd,
//! and whoever continues the work reads the last complete line.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A journal file and its cadence.
pub struct Journal {
    path: PathBuf,
    file: File,
    every: Duration,
    last: Option<Instant>,
}

impl Journal {
    /// Opens (creating) `path` for appending one entry every `every`; a
    /// symlink at `path` is refused, not followed.
    pub fn open(path: &Path, every: Duration) -> std::io::Result<Self> {
        let file =
            crate::files::open_no_follow(OpenOptions::new().create(true).append(true), path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            every,
            last: None,
        })
    }

    /// The journal's cadence: at most this much is lost with a killed process.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an entry is due (none yet, or `every` since the last one).
    pub fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= self.every)
    }

    /// Appends `entry` as one line and waits until it is on disk.
    pub fn append<T: Serialize>(&mut self, entry: &T) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.last = Some(Instant::now());
        Ok(())
    }

    /// The last complete entry of the journal at `path`: `None` when there
    /// is no file or no readable entry. A line torn by a crash mid-write is
    /// skipped.
    pub fn last<T: DeserializeOwned>(path: &Path) -> Option<T> {
        let f = File::open(path).ok()?;
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_append_and_a_torn_last_line_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j");
        assert_eq!(Journal::last::<Vec<f64>>(&p), None);
        let mut j = Journal::open(&p, Duration::from_secs(3600)).unwrap();
        assert!(j.due());
        j.append(&vec![1.0, 2.5]).unwrap();
        assert!(!j.due());
        j.append(&vec![3.0, 0.1 + 0.2]).unwrap();
        drop(j);
        // A second process appends to the same file.
        let mut j = Journal::open(&p, Duration::ZERO).unwrap();
        j.append(&vec![4.0]).unwrap();
        assert!(j.due());
        assert_eq!(Journal::last::<Vec<f64>>(&p), Some(vec![4.0]));
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"[5.0, 6").unwrap();
        assert_eq!(Journal::last::<Vec<f64>>(&p), Some(vec![4.0]));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("0.30000000000000004"), "{text}");
    }
}
