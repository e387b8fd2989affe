//! Process tracking mode against the real /proc: another process's work is
//! not charged to this one, this process's own threads are. A test binary
//! of its own, so that no other test's threads run in this process.

use greentrain_energy::estimate::{CpuLoad, TrackingMode};
use std::time::{Duration, Instant};

fn window(work: impl FnOnce()) -> (f64, f64) {
    let mut machine = CpuLoad::new(TrackingMode::Machine);
    let mut process = CpuLoad::new(TrackingMode::Process);
    machine.sample();
    process.sample();
    work();
    (machine.sample().unwrap(), process.sample().unwrap())
}

fn spin(d: Duration) {
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < d {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

#[test]
fn process_mode_charges_this_process_only() {
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    // A busy child process: the machine is busy, this process is not.
    let mut child = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("sh");
    let (m, p) = window(|| std::thread::sleep(Duration::from_millis(600)));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(m >= 0.7 / cpus, "the child's CPU: machine utilisation {m}");
    assert!(
        p <= 0.1 / cpus + 0.02,
        "the child charged to this process: {p}"
    );
    // A busy thread of this process: both see it.
    let (m, p) = window(|| {
        std::thread::spawn(|| spin(Duration::from_millis(600)))
            .join()
            .unwrap()
    });
    assert!(p >= 0.7 / cpus, "own thread not charged: {p}");
    assert!(p <= m + 0.05, "process {p} above machine {m}");
}
