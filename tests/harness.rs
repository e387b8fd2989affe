//! A small harness for running the `greentrain` binary in tests, after
//! ripgrep's `TestCommand`: build the command with `gt().args(..)`, then
//! `run()` it, or `ok()` / `code(n)` to run it and check its exit status
//! with its output in the failure message.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root, where the commands run (configs/ and datasets/ are
/// relative to it).
pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Lossy UTF-8 of a command's output.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One invocation of `greentrain`.
pub struct Gt(Command);

/// `greentrain`, run from the workspace root.
pub fn gt() -> Gt {
    let mut c = Command::new(env!("CARGO_BIN_EXE_greentrain"));
    c.current_dir(root());
    Gt(c)
}

impl Gt {
    /// Adds an argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.0.arg(a);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.0.args(args);
        self
    }

    /// Sets an environment variable for the command.
    #[allow(dead_code)]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.0.env(key, value);
        self
    }

    /// `--out DIR`.
    pub fn out(self, dir: impl AsRef<Path>) -> Self {
        self.arg("--out").arg(dir.as_ref())
    }

    /// Runs it to the end.
    pub fn run(mut self) -> Output {
        self.0.output().expect("the greentrain binary runs")
    }

    /// Runs it and checks that it succeeded.
    pub fn ok(self) -> Output {
        self.code(0)
    }

    /// Runs it and checks its exit status.
    pub fn code(self, want: i32) -> Output {
        let o = self.run();
        assert_eq!(
            o.status.code(),
            Some(want),
            "exit status\nstdout:\n{}\nstderr:\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        o
    }

    /// Starts it in the background, its output discarded.
    #[allow(dead_code)]
    pub fn spawn_quiet(mut self) -> Child {
        self.0
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the greentrain binary starts")
    }
}

/// The run folder in `out` once it holds `file` (polled every 2 ms, for up
/// to two minutes): how the kill tests time their signals.
#[allow(dead_code)]
pub fn wait_for_run_file(out: &Path, file: &str) -> PathBuf {
    let t0 = Instant::now();
    loop {
        let found = std::fs::read_dir(out)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path())
            .filter(|p| p.join(file).exists());
        if let Some(dir) = found {
            return dir;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no {file} appeared in {}",
            out.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
