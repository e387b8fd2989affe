//! The ResNet on flex: shapes, gradients and autocast dtypes, and a run
//! stopped after an epoch and resumed that ends exactly where the
//! uninterrupted run does, batch-norm running statistics included.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Int, Tensor, TensorData};
use greentrain_amp::{Autocast, Precision};
use greentrain_trainer::checkpoint::Checkpoint;
use greentrain_trainer::model::Model;
use greentrain_trainer::status::RunStatus;
use greentrain_trainer::train::{resume, train_with, Hooks};
use greentrain_trainer::{config, DeviceSpec, TrainRequest};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type B = Autodiff<Flex>;

fn request(out: &Path) -> TrainRequest {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ));
    let o: Vec<String> = [
        "model.kind=\"resnet\"",
        "model.depth=8",
        "model.width=4",
        "train.epochs=3",
        "run.name=\"digits_resnet\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    TrainRequest {
        config: config::load(&path, &o).unwrap(),
        device: DeviceSpec::Cpu,
        out_dir: out.to_path_buf(),
        quiet: true,
    }
}

#[test]
fn resnet_shapes_gradients_and_batch_norm_in_fp32() {
    let c = request(Path::new("/tmp")).config.config;
    let dev = Default::default();
    let model = Model::<B>::new(&c.model, &[64], 10, None, 0, &dev);
    let x: Vec<f32> = (0..3 * 64).map(|i| (i % 17) as f32 / 16.0).collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(x, [3, 64]), &dev);
    let fp32 = model.forward(x.clone(), &Autocast::new(Precision::Fp32));
    assert_eq!(fp32.dims(), [3, 10]);
    let ac = Autocast::new(Precision::Fp16);
    let logits = model.forward(x, &ac);
    assert_eq!(
        logits.dtype(),
        DType::F16,
        "the classifier is a 16-bit matmul"
    );
    let y = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [3]), &dev);
    let loss = ac.cross_entropy(logits, y);
    assert_eq!(loss.dtype(), DType::F32);
    let g = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
    let norm: Vec<f32> = greentrain_amp::grads::global_norm::<B, _>(&model, &g)
        .into_data()
        .to_vec()
        .unwrap();
    assert!(norm[0].is_finite() && norm[0] > 0.0, "{norm:?}");
}

#[test]
fn a_resnet_run_resumes_exactly_running_statistics_included() {
    let dir = tempfile::tempdir().unwrap();
    let whole = greentrain_trainer::train(request(&dir.path().join("whole"))).unwrap();
    assert_eq!(whole.status, "completed");
    let stop_after_one = Hooks {
        after_epoch: Some(Arc::new(|r: &greentrain_trainer::record::RunRecord| {
            (r.epochs.len() == 1).then_some(RunStatus::Interrupted)
        })),
        ..Default::default()
    };
    let cut = train_with(request(&dir.path().join("cut")), stop_after_one).unwrap();
    assert_eq!(cut.status, "interrupted");
    assert_eq!(cut.record.epochs.len(), 1);
    let done = resume(&cut.run_dir, None, true).unwrap();
    assert_eq!(done.status, "completed");
    let bits = |r: &greentrain_trainer::record::RunRecord| -> Vec<(u64, u64, u64)> {
        r.epochs
            .iter()
            .map(|e| {
                (
                    e.train_loss.to_bits(),
                    e.test_loss.to_bits(),
                    e.test_accuracy.to_bits(),
                )
            })
            .collect()
    };
    assert_eq!(bits(&done.record), bits(&whole.record));
    // The model record holds the batch-norm running statistics: the same
    // bytes mean the same statistics.
    assert_eq!(
        Checkpoint::load(&done.run_dir).unwrap().model,
        Checkpoint::load(&whole.run_dir).unwrap().model
    );
}
