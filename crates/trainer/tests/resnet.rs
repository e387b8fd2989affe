//! The ResNet on flex: shapes, gradients and autocast dtypes, and a run
//! stopped after an epoch and resumed that ends exactly where the
//! uninterrupted run does, batch-norm running statistics included.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Int, Tensor, TensorData};
use greentrain_amp::{Amp, Autocast, ConvPath, Precision};
use greentrain_trainer::checkpoint::Checkpoint;
use greentrain_trainer::model::Model;
use greentrain_trainer::status::RunStatus;
use greentrain_trainer::train::{resume, train_with, Hooks};
use greentrain_trainer::{config, DeviceSpec, TrainRequest};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type B = Amp<Autodiff<Flex>>;

fn request(out: &Path) -> TrainRequest {
    request_with(out, &[])
}

fn request_with(out: &Path, extra: &[&str]) -> TrainRequest {
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
    .chain(extra)
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
    let model = Model::<B>::new(&c.model, &[64], 10, 1, None, 0, &dev);
    let x: Vec<f32> = (0..3 * 64).map(|i| (i % 17) as f32 / 16.0).collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(x, [3, 64]), &dev);
    let fp32 = model.forward(x.clone());
    assert_eq!(fp32.dims(), [3, 10]);
    let ac = Autocast::new(Precision::Fp16);
    let _on = ac.enter();
    let logits = model.forward(x);
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

/// Logits and the gradients' global norm of one fp32 step on `conv`.
fn step(model: &Model<B>, conv: ConvPath) -> (Vec<f32>, f32) {
    let dev = Default::default();
    let x: Vec<f32> = (0..3 * 64).map(|i| (i % 17) as f32 / 16.0).collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(x, [3, 64]), &dev);
    let ac = Autocast::new(Precision::Fp32).with_conv(conv);
    let logits = {
        let _on = ac.enter();
        model.forward(x)
    };
    let values = logits.clone().into_data().to_vec().unwrap();
    let y = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [3]), &dev);
    let g = burn::optim::GradientsParams::from_grads(ac.cross_entropy(logits, y).backward(), model);
    let norm: Vec<f32> = greentrain_amp::grads::global_norm::<B, _>(model, &g)
        .into_data()
        .to_vec()
        .unwrap();
    (values, norm[0])
}

#[test]
fn resnet_convolutions_as_batched_products_match_the_native_ones() {
    let dir = tempfile::tempdir().unwrap();
    let req = request_with(dir.path(), &["model.conv=\"gemm\"", "train.epochs=1"]);
    assert_eq!(req.config.config.model.conv, Some(ConvPath::Gemm));
    let model = Model::<B>::new(
        &req.config.config.model,
        &[64],
        10,
        1,
        None,
        0,
        &Default::default(),
    );
    let (native, native_norm) = step(&model, ConvPath::Native);
    let (gemm, gemm_norm) = step(&model, ConvPath::Gemm);
    let scale = native.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (a, b) in gemm.iter().zip(&native) {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "logits {gemm:?} against {native:?}"
        );
    }
    assert!(
        (gemm_norm - native_norm).abs() <= 1e-4 * native_norm,
        "{gemm_norm} {native_norm}"
    );
    // A whole run on it, the choice kept in run.json's config.
    let r = greentrain_trainer::train(req).unwrap();
    assert_eq!(r.status, "completed");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.run_dir.join("run.json")).unwrap())
            .unwrap();
    assert_eq!(run["config"]["model"]["conv"], "gemm");
}

#[test]
fn an_unknown_convolution_path_is_an_error_naming_the_key_and_the_choices() {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ));
    let e = config::load(&path, &["model.conv=\"winograd\"".to_string()]).unwrap_err();
    let text = format!("{e:#}");
    // The value came from --set, so the error names that, the key and the choices.
    let named = ["--set", "model.conv", "`native` or `gemm`"];
    assert!(named.iter().all(|n| text.contains(n)), "{text}");
}
