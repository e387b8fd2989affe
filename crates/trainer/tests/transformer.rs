//! The modular dataset against hand-computed rows, the transformer's shapes,
//! gradients and autocast dtypes on flex, and a small grokking run that
//! generalises and records the energy it took to reach its target.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor, TensorData};
use greentrain_amp::{Autocast, Precision};
use greentrain_trainer::config::{self, ModOp};
use greentrain_trainer::data::modular;
use greentrain_trainer::model::Model;
use greentrain_trainer::{DeviceSpec, TrainRequest};
use std::path::PathBuf;

type B = greentrain_amp::Amp<Autodiff<Flex>>;

fn rows(split: &greentrain_trainer::data::Split) -> Vec<[usize; 4]> {
    (0..split.len())
        .map(|i| {
            let x = &split.x[i * 3..i * 3 + 3];
            [
                x[0] as usize,
                x[1] as usize,
                x[2] as usize,
                split.y[i] as usize,
            ]
        })
        .collect()
}

#[test]
fn modular_rows_are_every_pair_with_the_right_label() {
    let p = 7;
    for (op, f) in [
        (
            ModOp::Add,
            (|a, b| (a + b) % 7) as fn(usize, usize) -> usize,
        ),
        (ModOp::Sub, |a, b| (a + 7 - b) % 7),
        (ModOp::Mul, |a, b| a * b % 7),
    ] {
        let (train, test) = modular(p, op, 0.3, 5);
        let mut all = rows(&train);
        all.extend(rows(&test));
        assert_eq!(all.len(), 49, "{op:?}");
        assert_eq!(train.len(), 14, "0.3 x 49 = 14.7, rounded down");
        for [a, b, eq, c] in &all {
            assert_eq!(*eq, p, "the '=' token is p");
            assert_eq!(*c, f(*a, *b), "{op:?} {a} {b}");
        }
        let mut pairs: Vec<(usize, usize)> = all.iter().map(|r| (r[0], r[1])).collect();
        pairs.sort();
        pairs.dedup();
        assert_eq!(pairs.len(), 49, "each pair once");
    }
    // Division: b != 0, and c * b = a (mod p). 3 / 5 mod 7 = 2 (2 * 5 = 10 = 3).
    let (train, test) = modular(p, ModOp::Div, 0.5, 5);
    let mut all = rows(&train);
    all.extend(rows(&test));
    assert_eq!(all.len(), 42);
    assert!(all.iter().all(|[a, b, _, c]| *b != 0 && c * b % 7 == *a));
    assert!(all.contains(&[3, 5, 7, 2]));
    // The same seed gives the same split; another seed another.
    assert_eq!(
        modular(p, ModOp::Add, 0.3, 5).0,
        modular(p, ModOp::Add, 0.3, 5).0
    );
    assert_ne!(
        modular(p, ModOp::Add, 0.3, 5).0,
        modular(p, ModOp::Add, 0.3, 6).0
    );
}

fn small_config() -> config::Config {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/paper/grokking_small.toml"
    ));
    config::load(&path, &["data.p=7".into(), "model.norm=\"pre\"".into()])
        .unwrap()
        .config
}

#[test]
fn transformer_shapes_gradients_and_autocast_dtypes() {
    let c = small_config();
    let dev = Default::default();
    let model = Model::<B>::new(&c.model, &[3], 7, 1, Some(8), 0, &dev);
    let tokens: Vec<f32> = vec![1., 2., 7., 3., 6., 7., 0., 0., 7., 5., 4., 7.];
    let x = Tensor::<B, 2>::from_data(TensorData::new(tokens, [4, 3]), &dev);
    let fp32 = model.forward(x.clone());
    assert_eq!(fp32.dims(), [4, 7]);
    assert_eq!(fp32.dtype(), DType::F32);
    let ac16 = Autocast::new(Precision::Fp16);
    let fp16 = {
        let _on = ac16.enter();
        model.forward(x.clone())
    };
    assert_eq!(
        fp16.dtype(),
        DType::F16,
        "the unembedding is a 16-bit matmul"
    );
    let a: Vec<f32> = fp32.clone().into_data().convert::<f32>().to_vec().unwrap();
    let b: Vec<f32> = fp16
        .clone()
        .cast(burn::tensor::FloatDType::F32)
        .into_data()
        .to_vec()
        .unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() < 2e-2 * (1.0 + x.abs()),
            "fp16 {y} vs fp32 {x}"
        );
    }
    // The loss is f32, and every parameter gets a finite gradient.
    let y = Tensor::<B, 1, burn::tensor::Int>::from_data(
        TensorData::new(vec![3i64, 2, 0, 2], [4]),
        &dev,
    );
    let loss = ac16.cross_entropy(fp16, y);
    assert_eq!(loss.dtype(), DType::F32);
    let grads = loss.backward();
    let gp = burn::optim::GradientsParams::from_grads(grads, &model);
    let norm: Vec<f32> = greentrain_amp::grads::global_norm::<B, _>(&model, &gp)
        .into_data()
        .to_vec()
        .unwrap();
    assert!(norm[0].is_finite() && norm[0] > 0.0, "{norm:?}");
}

/// The small grokking config generalises on the CPU, and the run records
/// the first epoch at 90% test accuracy with the energy up to it, then
/// stops there with status `reached_target`.
#[test]
fn a_small_grokking_run_reaches_its_target_and_records_the_energy() {
    let out = tempfile::tempdir().unwrap();
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/paper/grokking_small.toml"
    ));
    let o = greentrain_trainer::train(TrainRequest {
        config: config::load(&path, &["train.stop_at_target=true".into()]).unwrap(),
        device: DeviceSpec::Cpu,
        out_dir: out.path().to_path_buf(),
        quiet: true,
    })
    .unwrap();
    assert_eq!(o.status, "reached_target");
    let t = o.record.target.clone().expect("a target record");
    assert!(
        t.reached && t.metric == "test_accuracy" && t.accuracy == Some(0.9),
        "{t:?}"
    );
    let last = o.record.epochs.last().unwrap();
    assert_eq!(
        t.epoch,
        Some(last.epoch),
        "it stopped at the epoch that met it"
    );
    assert!(last.epoch < 20 && last.test_accuracy >= 0.9);
    assert!(o.record.epochs[..last.epoch - 1]
        .iter()
        .all(|e| e.test_accuracy < 0.9));
    let e = o.record.energy.as_ref().unwrap();
    // Energy up to the end of that epoch: the run's total less what its
    // last record writes took.
    let tj = t.energy_j.unwrap();
    assert!(
        tj > 0.0 && tj <= e.total_j && tj > 0.99 * e.total_j,
        "{tj} vs {}",
        e.total_j
    );
    assert_eq!(t.provenance, Some(e.provenance));
    assert!(t.co2_g.unwrap() > 0.0);
    let wall: f64 = o.record.epochs.iter().map(|e| e.wall_s).sum();
    assert_eq!(t.wall_s, Some(wall));
}
