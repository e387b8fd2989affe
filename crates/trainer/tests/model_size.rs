//! The GPU benchmark's models have the parameter counts of their PyTorch
//! twins in benches/gpu/torch_ref.py (counted there with PyTorch 2.15:
//! `sum(p.numel() for p in model.parameters())`; its 1,568 batch-norm running
//! statistics of ResNet-20 are buffers there), so the two frameworks
//! train the same architectures; and run.json records the count.

use burn::backend::Flex;
use burn::module::Module;
use greentrain_trainer::config;
use greentrain_trainer::model::Model;
use greentrain_trainer::{DeviceSpec, TrainRequest};
use std::path::PathBuf;

/// A shipped config, with overrides.
fn load(name: &str, overrides: &[&str]) -> config::LoadedConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(name);
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    config::load(&path, &o).unwrap()
}

#[test]
fn gpu_benchmark_models_have_pytorchs_parameter_counts() {
    let dev = Default::default();
    // (config, sample shape, classes, vocab, PyTorch's count)
    type Case = (&'static str, &'static [usize], usize, Option<usize>, usize);
    let cases: [Case; 4] = [
        ("gpu/mnist_wide_mlp.toml", &[784], 10, None, 20_037_642),
        ("gpu/mnist_lenet5.toml", &[784], 10, None, 61_706),
        ("gpu/mnist_resnet20.toml", &[784], 10, None, 272_186),
        (
            "gpu/modular_transformer.toml",
            &[3],
            113,
            Some(114),
            6_423_665,
        ),
    ];
    for (name, shape, classes, vocab, torch) in cases {
        let c = load(name, &[]).config;
        let m = Model::<Flex>::new(&c.model, shape, classes, 1, vocab, 0, &dev);
        assert_eq!(m.trainable_params(), torch, "{name}");
        let running = m.num_params() - m.trainable_params();
        assert_eq!(
            running,
            if name.contains("resnet") { 1568 } else { 0 },
            "{name}: batch-norm statistics"
        );
    }
}

/// Nanda et al.'s grokking model (their transformers.py: attention without
/// biases, MLP with, unembedding without) has 226,816 parameters; ours has the
/// same less the 128 weights of the logit for the `=` token, which their
/// unembedding keeps (p + 1 outputs) and ours leaves out (p classes).
#[test]
fn the_grokking_config_has_nanda_et_al_s_parameter_count_less_one_logit() {
    let dev = Default::default();
    for precision in ["fp32", "fp16"] {
        let name = format!("paper/grokking_nanda2023_{precision}.toml");
        let c = load(&name, &[]).config;
        let m = Model::<Flex>::new(&c.model, &[3], 113, 1, Some(114), 0, &dev);
        assert_eq!(m.trainable_params(), 226_816 - 128, "{name}");
    }
}

#[test]
fn run_json_records_the_parameter_count() {
    let dir = tempfile::tempdir().unwrap();
    let c = load("digits_mlp.toml", &["train.epochs=1"]);
    let hidden = c.config.model.hidden.clone();
    let out = greentrain_trainer::train(TrainRequest {
        config: c,
        device: DeviceSpec::Cpu,
        out_dir: dir.path().to_path_buf(),
        quiet: true,
    })
    .unwrap();
    // Fully connected: 64 inputs, the hidden widths, 10 classes, with biases.
    let widths: Vec<usize> = [64].into_iter().chain(hidden).chain([10]).collect();
    let want: usize = widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    assert_eq!(out.record.parameters, Some(want as u64));
    let text = std::fs::read_to_string(out.run_dir.join("run.json")).unwrap();
    assert!(text.contains(&format!("\"parameters\": {want}")), "{text}");
}
