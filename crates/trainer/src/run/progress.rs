//! Progress output: a bar on a terminal, lines otherwise, nothing when quiet.

use std::io::IsTerminal;

pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    pub(crate) fn new(quiet: bool) -> Self {
        Self { bar: None, quiet }
    }
    pub(crate) fn start_epoch(&mut self, epoch: usize, epochs: usize, steps: usize, done: usize) {
        if self.quiet || !std::io::stdout().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(steps as u64),
            indicatif::ProgressDrawTarget::stdout(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        bar.set_position(done as u64);
        self.bar = Some(bar);
    }
    pub(crate) fn step(
        &self,
        epoch: usize,
        epochs: usize,
        step: usize,
        steps: usize,
        msg: Option<String>,
    ) {
        if self.quiet {
            return;
        }
        match (&self.bar, msg) {
            (Some(b), Some(m)) => {
                b.set_position(step as u64);
                b.set_message(m);
            }
            (Some(b), None) => b.set_position(step as u64),
            (None, Some(m)) => println!(
                "epoch {}/{} step {}/{} {}",
                epoch + 1,
                epochs,
                step,
                steps,
                m
            ),
            (None, None) => {}
        }
    }
    pub(crate) fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
    pub(crate) fn line(&self, s: &str) {
        if !self.quiet {
            println!("{s}");
        }
    }
}
