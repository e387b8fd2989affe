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
    /// The energy tracker's warnings, on stderr (nothing when quiet: they
    /// are in run.json's `energy.warnings` all the same).
    pub(crate) fn energy_warnings(&self, warnings: Vec<String>) {
        if self.quiet {
            return;
        }
        for w in warnings {
            match &self.bar {
                Some(b) => b.suspend(|| eprintln!("energy: warning: {w}")),
                None => eprintln!("energy: warning: {w}"),
            }
        }
    }
}

/// What a run says, each from the records it reports: the one place its
/// words live.
pub(crate) mod words {
    use crate::record::{sig, EpochRecord, RunRecord};
    use crate::status::RunStatus;
    use greentrain_amp::{Precision, PrecisionChoice};
    use greentrain_energy::budget::Prediction;
    use greentrain_energy::Provenance;

    /// The first line of a run: what trains, where, on what.
    pub(crate) fn start(r: &RunRecord, train: usize, test: usize) -> String {
        format!(
            "training {} ({} parameters) on {} ({} {}), {train} train / {test} test samples, {} epochs, precision {}{}",
            r.name,
            r.parameters.unwrap_or(0),
            r.device.name,
            r.device.backend,
            r.device.spec,
            r.config.train.epochs,
            r.precision,
            if r.precision_requested == Some(PrecisionChoice::Auto) {
                " (auto)"
            } else {
                ""
            }
        )
    }

    /// The first line of a resumed process.
    pub(crate) fn resuming(name: &str, epoch: usize, step: usize) -> String {
        format!("resuming {name} at epoch {} step {step}", epoch + 1)
    }

    /// Why 16-bit precision on the CPU costs more, not less.
    pub(crate) fn cpu_precision_note(p: Precision) -> String {
        // A user benchmarking precisions on a laptop should not read the
        // CPU's figures as what AMP saves: flex has no 16-bit arithmetic.
        format!(
            "note: {p} on the CPU (flex) widens 16-bit values to f32 for its element-wise ops \
             (and for its products, except fp16 ones on ARM CPUs with fp16 arithmetic): expect more time \
             and energy than fp32, not less (measured: docs/paper-results.md); it tests the \
             AMP path, the saving needs a GPU"
        )
    }

    /// An epoch's line; `scaled` adds the loss scale, `provenance` the
    /// energy.
    pub(crate) fn epoch(
        e: &EpochRecord,
        epochs: usize,
        scaled: bool,
        provenance: Option<Provenance>,
    ) -> String {
        let mut line = format!(
            "epoch {}/{epochs}: train_loss {:.4} train_acc {:.2}% test_loss {:.4} test_acc {:.2}% ",
            e.epoch,
            e.train_loss,
            100.0 * e.train_accuracy.unwrap_or(f64::NAN),
            e.test_loss,
            100.0 * e.test_accuracy
        );
        if let Some(a) = e.val_accuracy {
            line.push_str(&format!("val_acc {:.2}% ", 100.0 * a));
        }
        line.push_str(&format!(
            "{:.1}s {:.0} samples/s",
            e.wall_s, e.samples_per_s
        ));
        if scaled {
            line.push_str(&format!(
                " scale {} skipped {}",
                e.loss_scale, e.skipped_steps
            ));
        }
        if let (Some(j), Some(g), Some(p)) = (e.energy_j, e.co2_g, provenance) {
            line.push_str(&format!(" {} J [{p}] {} gCO2eq", sig(j), sig(g)));
        }
        line
    }

    /// The whole run's prediction, with its intervals.
    pub(crate) fn prediction(p: &Prediction, provenance: Provenance) -> String {
        format!(
            "prediction after {} epoch(s): {} s ({}-{}), {} kWh ({}-{}), {} gCO2eq ({}-{}) [{provenance}]",
            p.after_epochs,
            sig(p.time_s.mean),
            sig(p.time_s.low),
            sig(p.time_s.high),
            sig(p.energy_kwh.mean),
            sig(p.energy_kwh.low),
            sig(p.energy_kwh.high),
            sig(p.co2_g.mean),
            sig(p.co2_g.low),
            sig(p.co2_g.high),
        )
    }

    /// The lines at a run's end: accuracy and speed (when it completed),
    /// energy with its parts, carbon, and the waiting kept apart.
    pub(crate) fn summary(r: &RunRecord, status: RunStatus, scaled: bool) -> Vec<String> {
        let Some(f) = &r.final_ else {
            return vec![];
        };
        let mut lines = vec![];
        if status == RunStatus::Completed {
            lines.push(format!(
                "done: test accuracy {:.2}% in {:.1}s of training ({} samples, {:.0} samples/s), precision {}{}",
                100.0 * f.test_accuracy,
                f.wall_s,
                f.samples,
                f.samples as f64 / f.wall_s.max(1e-9),
                r.precision,
                if scaled {
                    format!(", {} skipped steps", f.skipped_steps)
                } else {
                    String::new()
                }
            ));
        }
        if let (Some(e), Some(cb), Some(kwh), Some(g), Some(jps)) =
            (&r.energy, &r.carbon, f.energy_kwh, f.co2_g, f.j_per_sample)
        {
            let parts: Vec<String> = e
                .components
                .iter()
                .map(|c| format!("{} {} J {}", c.name, sig(c.joules), c.provenance))
                .collect();
            lines.push(format!(
                "energy: {} J = {} kWh [{}] ({}); {} gCO2eq at {} g/kWh ({}), PUE {}; {} J/sample",
                sig(e.total_j),
                sig(kwh),
                e.provenance,
                parts.join(", "),
                sig(g),
                sig(cb.operational.intensity_g_per_kwh),
                cb.operational.source,
                cb.operational.pue,
                sig(jps)
            ));
            if let Some(w) = &e.waiting {
                lines.push(format!(
                    "waiting for slots: {} J [{}] over {} s, not counted above",
                    sig(w.joules),
                    w.provenance,
                    sig(w.seconds)
                ));
            }
        }
        lines
    }

    /// The pause countdown, rewritten in place.
    pub(crate) fn countdown(left_s: f64) -> String {
        format!("\rschedule: {} left   ", crate::follow::hms(left_s))
    }
}
