//! Where a run's batches come from, and evaluation.

use crate::data::{self, Augment, Split};
use crate::network::Network;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use greentrain_amp::{readback, Autocast};

/// Where training batches come from. On a GPU the whole training split is
/// uploaded once and each batch is selected on the device: gathering 4096
/// MNIST rows on the host and copying them over costs milliseconds a step,
/// as much as the step itself. On the CPU, and for splits larger than the
/// device allows (`device::resident_split_limit`), rows are gathered on the
/// host.
pub(crate) enum Batches<B: Backend> {
    /// Gathered on the host, augmented there when the dataset asks.
    Host(Option<Augment>),
    Device {
        x: Tensor<B, 2>,
        /// `[n, targets]`.
        y: Tensor<B, 2, Int>,
    },
}

impl<B: Backend> Batches<B> {
    pub(crate) fn new(
        split: &Split,
        features: usize,
        device: &B::Device,
        limit_bytes: u64,
        augment: Option<Augment>,
    ) -> Self {
        let bytes = split.x.len() as u64 * 4 + split.y.len() as u64 * 8;
        if bytes > limit_bytes || augment.is_some() {
            // Augmented batches are cropped and flipped on the host.
            return Batches::Host(augment);
        }
        let n = split.len();
        let y: Vec<i64> = split.y.iter().map(|&v| v as i64).collect();
        Batches::Device {
            x: Tensor::from_data(TensorData::new(split.x.clone(), [n, features]), device),
            y: Tensor::from_data(TensorData::new(y, [n, split.targets]), device),
        }
    }

    /// The batch `ids`, the `step`-th of `epoch` (which fixes its crops
    /// and flips), and its labels flattened to `[ids.len() * targets]`.
    pub(crate) fn get(
        &self,
        split: &Split,
        features: usize,
        ids: &[usize],
        (epoch, step): (usize, usize),
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
        match self {
            Batches::Host(augment) => {
                let (mut x, y) = data::gather(split, features, ids);
                if let Some(a) = augment {
                    a.apply(&mut x, epoch, step);
                }
                to_tensors::<B>(x, y, features, device)
            }
            Batches::Device { x, y } => {
                let idx: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
                let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [ids.len()]), device);
                let y = y.clone().select(0, idx.clone());
                (
                    x.clone().select(0, idx),
                    y.reshape([ids.len() * split.targets]),
                )
            }
        }
    }
}

fn to_tensors<B: Backend>(
    x: Vec<f32>,
    y: Vec<i64>,
    features: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let n = x.len() / features.max(1);
    let labels = y.len();
    let x = Tensor::from_data(TensorData::new(x, [n, features]), device);
    let y = Tensor::from_data(TensorData::new(y, [labels]), device);
    (x, y)
}

/// Mean loss and accuracy per label of `model` on `split`, read back once.
pub(crate) fn evaluate<B: Backend, N: Network<B>>(
    model: &N,
    ac: &Autocast,
    split: &Split,
    features: usize,
    batch: usize,
    device: &B::Device,
) -> (f64, f64) {
    let ids: Vec<usize> = (0..split.len()).collect();
    let mut loss_sum: Option<Tensor<B, 1>> = None;
    let mut correct: Option<Tensor<B, 1, Int>> = None;
    for chunk in ids.chunks(batch) {
        let (x, y) = data::gather(split, features, chunk);
        let (x, y) = to_tensors::<B>(x, y, features, device);
        let logits = {
            let _autocast = ac.enter();
            model.logits(x)
        };
        let n = chunk.len() * split.targets;
        let pred = logits.clone().argmax(1).reshape([n]);
        let hits = pred.equal(y.clone()).int().sum();
        let l = ac.cross_entropy_per_sample(logits, y).sum();
        loss_sum = Some(match loss_sum {
            Some(s) => s + l,
            None => l,
        });
        correct = Some(match correct {
            Some(c) => c + hits,
            None => hits,
        });
    }
    // Per label: per token for next-token prediction.
    let n = split.y.len().max(1) as f64;
    let loss: f32 = loss_sum.map(|t| readback::read_f32(t)[0]).unwrap_or(0.0);
    let hits: i64 = correct.map(|t| readback::read_i64(t)[0]).unwrap_or(0);
    (loss as f64 / n, hits as f64 / n)
}
