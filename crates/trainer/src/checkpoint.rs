//! Checkpoints: one file, `checkpoint.bin`, replaced atomically, holding the
//! training state (JSON), the model record and the optimizer record, sealed
//! by a sha256 so that a damaged file is refused with a message instead of
//! being half-decoded.

use crate::files::write_atomic;
use crate::record::EpochRecord;
use greentrain_amp::ScalerState;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Version 2: the optimizer part is greentrain's device optimizer record
/// (version 1 held Burn's optimizer records).
const MAGIC: &[u8; 8] = b"GTCKPT2\n";
const MAGIC_V1: &[u8; 8] = b"GTCKPT1\n";

/// File name inside the run directory.
pub const FILE: &str = "checkpoint.bin";

/// Where training stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// 0-based epoch in progress (or next to start).
    pub epoch: usize,
    /// Next batch within that epoch (0 at an epoch boundary).
    pub step: usize,
    /// Optimizer steps taken or skipped so far (drives the LR schedule).
    pub optimizer_steps: u64,
    /// Partial sums of the epoch in progress.
    pub partial: PartialEpoch,
    /// Loss scaler state.
    pub scaler: ScalerState,
    /// Finished epochs.
    pub epochs: Vec<EpochRecord>,
    /// Folder the original config was read from (resolves relative paths).
    pub config_dir: PathBuf,
}

/// The sizes a run's config gives it, against which a restored state is
/// checked.
#[derive(Clone, Copy, Debug)]
pub struct Extent {
    /// Epochs the config trains.
    pub epochs: usize,
    /// Micro-batches per epoch.
    pub steps: usize,
    /// Optimizer steps over all epochs.
    pub optimizer_steps: u64,
    /// Samples per micro-batch.
    pub batch: usize,
    /// Labels per sample (each counted in `correct`).
    pub targets: usize,
}

impl TrainState {
    /// Whether this state (from a file: untrusted, though sealed) can be
    /// where a run of `extent` stands: an epoch of 10^6 would otherwise end
    /// the run `completed` at once.
    pub fn check_fits(&self, extent: Extent) -> Result<(), String> {
        let Extent {
            epochs,
            steps,
            optimizer_steps,
            batch,
            targets,
        } = extent;
        let p = &self.partial;
        let fail = |what: String| Err(format!("its state is not a point of this run: {what}"));
        if self.epoch > epochs || (self.epoch == epochs && self.step > 0) {
            return fail(format!("epoch {} of {epochs}", self.epoch + 1));
        }
        if self.step > steps {
            return fail(format!("step {} of an epoch of {steps}", self.step));
        }
        if self.optimizer_steps > optimizer_steps {
            return fail(format!(
                "{} optimizer steps of {optimizer_steps}",
                self.optimizer_steps
            ));
        }
        if self.epochs.len() != self.epoch
            || self
                .epochs
                .iter()
                .enumerate()
                .any(|(i, e)| e.epoch != i + 1)
        {
            return fail(format!(
                "{} finished epochs recorded at epoch {}",
                self.epochs.len(),
                self.epoch + 1
            ));
        }
        if p.samples > (self.step * batch) as u64
            || p.correct > p.samples.saturating_mul(targets as u64)
            || p.skipped > self.step as u64
        {
            return fail(format!(
                "{} samples ({} correct, {} steps skipped) after {} steps of {batch}",
                p.samples, p.correct, p.skipped, self.step
            ));
        }
        let bad = |x: f64| !x.is_finite() || x < 0.0;
        if bad(p.wall_s) || bad(p.data_s) || bad(p.energy_j) {
            return fail(format!(
                "times {} s and {} s, {} J",
                p.wall_s, p.data_s, p.energy_j
            ));
        }
        let sc = &self.scaler;
        if !sc.scale.is_finite() || sc.scale <= 0.0 {
            return fail(format!("loss scale {}", sc.scale));
        }
        Ok(())
    }
}

/// Sums over the part of an epoch already trained.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Device-side f32 loss sum, stored exactly so a resumed sum continues bit for bit.
    #[serde(with = "crate::num::f32_any")]
    pub loss_sum: f32,
    /// Training samples classified correctly so far (counted on the device
    /// in f32: exact below 2^24 samples an epoch).
    #[serde(default)]
    pub correct: u64,
    /// Samples trained.
    pub samples: u64,
    /// Steps skipped.
    pub skipped: u64,
    /// Training wall seconds.
    pub wall_s: f64,
    /// Data loading seconds.
    pub data_s: f64,
    /// Joules of the epoch's training window so far.
    #[serde(default)]
    pub energy_j: f64,
}

/// A checkpoint's parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Training state.
    pub state: TrainState,
    /// Model record bytes (Burn `BinBytesRecorder`, full precision).
    pub model: Vec<u8>,
    /// Optimizer record bytes.
    pub optim: Vec<u8>,
}

fn put(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u64).to_le_bytes());
    out.extend_from_slice(part);
}

impl Checkpoint {
    /// Serialises and writes atomically into `dir/checkpoint.bin`.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(&self.state).expect("state serialises");
        let mut out = Vec::with_capacity(64 + json.len() + self.model.len() + self.optim.len());
        out.extend_from_slice(MAGIC);
        put(&mut out, &json);
        put(&mut out, &self.model);
        put(&mut out, &self.optim);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        write_atomic(&dir.join(FILE), &out)
    }

    /// Reads and verifies `dir/checkpoint.bin`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(FILE);
        let bytes = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read checkpoint: {e}", path.display()))?;
        Self::from_bytes(&bytes).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))
    }

    /// Parses checkpoint bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() >= 8 && &bytes[..8] == MAGIC_V1 {
            return Err(
                "checkpoint written by an earlier greentrain (format 1, Burn optimizer \
                        state); this version cannot resume it: start the run again"
                    .into(),
            );
        }
        if bytes.len() < MAGIC.len() + 32 || &bytes[..8] != MAGIC {
            return Err("not a greentrain checkpoint (bad magic)".into());
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err("checkpoint is damaged (sha256 mismatch)".into());
        }
        let mut pos = 8;
        // Every length is bounded by the bytes that remain.
        let mut take = || -> Result<&[u8], String> {
            let len_bytes = body.get(pos..pos + 8).ok_or("checkpoint truncated")?;
            let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| (pos + 8).checked_add(l))
                .filter(|&e| e <= body.len())
                .ok_or_else(|| {
                    format!(
                        "checkpoint damaged: a part claims {len} bytes, the file has {}",
                        bytes.len()
                    )
                })?;
            let part = &body[pos + 8..end];
            pos = end;
            Ok(part)
        };
        let json = take()?;
        let model = take()?.to_vec();
        let optim = take()?.to_vec();
        if pos != body.len() {
            return Err("checkpoint damaged: bytes after its last part".into());
        }
        let state = serde_json::from_slice(json)
            .map_err(|e| format!("checkpoint state unreadable: {e}"))?;
        Ok(Self {
            state,
            model,
            optim,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use greentrain_amp::GradScaler;

    fn sample() -> Checkpoint {
        Checkpoint {
            state: TrainState {
                epoch: 2,
                step: 5,
                optimizer_steps: 17,
                partial: PartialEpoch {
                    loss_sum: 1.25,
                    correct: 7,
                    samples: 40,
                    skipped: 1,
                    wall_s: 0.5,
                    data_s: 0.1,
                    energy_j: 2.0,
                },
                scaler: GradScaler::identity().state().clone(),
                epochs: vec![],
                config_dir: PathBuf::from("/x"),
            },
            model: vec![1, 2, 3],
            optim: vec![9; 100],
        }
    }

    #[test]
    fn roundtrip_and_damage_detected() {
        let d = tempfile::tempdir().unwrap();
        let c = sample();
        c.save(d.path()).unwrap();
        assert_eq!(Checkpoint::load(d.path()).unwrap(), c);
        let p = d.path().join(FILE);
        let mut b = std::fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 1;
        std::fs::write(&p, &b).unwrap();
        let e = Checkpoint::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        std::fs::write(&p, &b[..20]).unwrap();
        assert!(Checkpoint::load(d.path()).is_err());
    }
}
