//! Config errors name the file, the key and the line.

use greentrain_trainer::config::{self, DatasetKind, ModelKind};
use greentrain_trainer::model;

const GOOD: &str = r#"
[run]
name = "t"
seed = 1

[data]
dataset = "digits"
batch_size = 32

[model]
kind = "mlp"
hidden = [16]

[train]
epochs = 2
optimizer = "adam"
lr = 0.001
"#;

fn err(src: &str, overrides: &[&str]) -> config::ConfigError {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    config::parse(src, "x.toml", &o).unwrap_err()
}

#[test]
fn checkpoint_every_and_steps_per_epoch_parse_or_name_the_key() {
    use greentrain_trainer::config::CheckpointEvery;
    let ok = |v: &str| {
        config::parse(GOOD, "x.toml", &[format!("train.checkpoint_every={v}")])
            .unwrap()
            .train
            .checkpoint_every
    };
    assert_eq!(ok("3"), CheckpointEvery::Epochs(3));
    assert_eq!(ok("\"90s\""), CheckpointEvery::Seconds(90.0));
    assert_eq!(ok("\"10m\""), CheckpointEvery::Seconds(600.0));
    assert_eq!(ok("auto"), CheckpointEvery::Auto);
    for bad in ["0", "\"soon\"", "\"-5s\""] {
        let e = err(GOOD, &[&format!("train.checkpoint_every={bad}")]);
        assert_eq!(
            e.key.as_deref(),
            Some("train.checkpoint_every"),
            "{bad}: {e}"
        );
    }
    let e = err(GOOD, &["train.steps_per_epoch=0"]);
    assert_eq!(e.key.as_deref(), Some("train.steps_per_epoch"), "{e}");
    // Due rules: auto keeps checkpoint time under 5%.
    assert!(CheckpointEvery::Auto.due(1, 0.0, None));
    assert!(!CheckpointEvery::Auto.due(2, 1.9, Some(0.1)));
    assert!(CheckpointEvery::Auto.due(2, 2.0, Some(0.1)));
    assert!(CheckpointEvery::Epochs(2).due(4, 0.0, Some(9.0)));
    assert!(!CheckpointEvery::Epochs(2).due(3, 99.0, Some(0.0)));
}

#[test]
fn precision_auto_parses_and_a_typo_names_the_choices() {
    let c = config::parse(GOOD, "x.toml", &["precision.mode=auto".into()]).unwrap();
    assert_eq!(c.precision.mode.to_string(), "auto");
    let c = config::parse(GOOD, "x.toml", &["precision.mode=half".into()]).unwrap();
    assert_eq!(c.precision.mode.to_string(), "fp16");
    let e = err(GOOD, &["precision.mode=fp8"]);
    assert!(e.to_string().contains("auto, fp32, fp16 or bf16"), "{e}");
}

#[test]
fn good_config_parses_with_defaults() {
    let c = config::parse(GOOD, "x.toml", &[]).unwrap();
    assert_eq!(c.data.dataset, DatasetKind::Digits);
    assert_eq!(c.model.kind, ModelKind::Mlp);
    assert_eq!(c.precision.mode.to_string(), "auto");
    assert_eq!(c.precision.scaler.init_scale, 65536.0);
    assert_eq!(c.train.accumulate, 1);
    assert_eq!(c.train.steps_per_epoch, None);
    assert_eq!(c.train.checkpoint_every.to_string(), "auto");
    // The resolved config round-trips through its TOML.
    let again = config::parse(&c.to_toml(), "resolved.toml", &[]).unwrap();
    assert_eq!(again, c);
}

#[test]
fn unknown_key_names_key_file_and_line() {
    let src = GOOD.replace("lr = 0.001", "lr = 0.001\nepochz = 3");
    let e = err(&src, &[]);
    assert_eq!(e.file, "x.toml");
    assert_eq!(e.line, Some(18));
    assert!(e.msg.contains("epochz"), "{e}");
    assert!(e.to_string().contains("x.toml line 18"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let src = GOOD.replace("batch_size = 32", "batch_size = \"big\"");
    let e = err(&src, &[]);
    assert_eq!(e.key.as_deref(), Some("data.batch_size"));
    assert_eq!(e.line, Some(8));
}

#[test]
fn unknown_enum_value_is_an_error() {
    let e = err(&GOOD.replace("\"adam\"", "\"adamax\""), &[]);
    assert_eq!(e.key.as_deref(), Some("train.optimizer"));
    assert!(e.msg.contains("adamax"), "{e}");
    let e = err(GOOD, &["energy.tracking_mode=\"procces\""]);
    assert_eq!(e.key.as_deref(), Some("energy.tracking_mode"));
    assert!(
        e.msg.contains("procces") && e.msg.contains("`process`"),
        "{e}"
    );
}

#[test]
fn out_of_range_value_names_key_and_line() {
    let e = err(&GOOD.replace("lr = 0.001", "lr = -1.0"), &[]);
    assert_eq!(e.key.as_deref(), Some("train.lr"));
    assert_eq!(e.line, Some(17));
    let e = err(&GOOD.replace("epochs = 2", "epochs = 0"), &[]);
    assert_eq!(e.key.as_deref(), Some("train.epochs"));
    let e = err(
        &GOOD.replace(
            "seed = 1",
            "seed = 1\n[precision]\nmode = \"fp16\"\nbackoff_factor = 2.0",
        ),
        &[],
    );
    assert_eq!(e.key.as_deref(), Some("precision.backoff_factor"));
}

#[test]
fn missing_section_is_an_error() {
    let src = GOOD.replace("[model]\nkind = \"mlp\"\nhidden = [16]\n", "");
    let e = err(&src, &[]);
    assert!(e.msg.contains("model"), "{e}");
}

#[test]
fn overrides_apply_and_are_blamed() {
    let o = vec![
        "train.lr=0.5".to_string(),
        "precision.mode=fp16".to_string(),
        "run.name=renamed".to_string(),
    ];
    let c = config::parse(GOOD, "x.toml", &o).unwrap();
    assert_eq!(c.train.lr, 0.5);
    assert_eq!(c.precision.mode.to_string(), "fp16");
    assert_eq!(c.run.name, "renamed");
    let e = err(GOOD, &["train.lr=-3"]);
    assert_eq!(e.file, "--set");
    assert_eq!(e.key.as_deref(), Some("train.lr"));
    let e = err(GOOD, &["train.nope=1"]);
    assert_eq!(e.file, "--set");
    assert!(e.msg.contains("nope"), "{e}");
    let e = err(GOOD, &["novalue"]);
    assert!(e.msg.contains("section.key=value"), "{e}");
}

#[test]
fn idx_dataset_needs_its_paths() {
    let e = err(&GOOD.replace("\"digits\"", "\"idx\""), &[]);
    assert_eq!(e.key.as_deref(), Some("data.train_images"));
    let e = err(
        &GOOD.replace("batch_size = 32", "batch_size = 32\ntrain_images = \"a\""),
        &[],
    );
    assert_eq!(e.key.as_deref(), Some("data.train_images"));
}

#[test]
fn model_that_does_not_fit_the_data_is_rejected() {
    let c = config::parse(&GOOD.replace("\"mlp\"", "\"lenet5\""), "x.toml", &[]).unwrap();
    let e = model::check_fit(&c.model, "digits", &[64], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("28x28"), "{e}");
    let c = config::parse(&GOOD.replace("\"mlp\"", "\"mnist1d_cnn\""), "x.toml", &[]).unwrap();
    assert!(model::check_fit(&c.model, "mnist1d", &[40], None).is_ok());
    assert!(model::check_fit(&c.model, "x", &[2], None).is_err());
    assert!(model::check_fit(&c.model, "x", &[28, 28], None).is_err());
}

#[test]
fn shipped_configs_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");
    let mut n = 0;
    for dir in [
        root.to_string(),
        format!("{root}/paper"),
        format!("{root}/gpu"),
    ] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                config::load(&p, &[]).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
    }
    assert!(n >= 16, "{n} configs");
}

/// `warmup_steps` as PyTorch's `LambdaLR(lambda s: min(s / N, 1))`: the first
/// step's rate is 0; a cosine schedule decays over the steps after the warm-up.
#[test]
fn warmup_ramps_the_rate_from_zero_then_hands_over_to_the_schedule() {
    use greentrain_trainer::train::lr_at;
    let parse = |o: &[&str]| {
        let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
        config::parse(GOOD, "x.toml", &o).unwrap()
    };
    let c = parse(&["train.warmup_steps=10"]);
    let rates: Vec<f64> = [0, 1, 5, 9, 10, 11, 1000]
        .iter()
        .map(|&s| lr_at(&c, s, 2000, 0))
        .collect();
    // PyTorch: base_lr * (s / 10), in float64.
    let torch = [0.0, 1e-3 * 0.1, 1e-3 * 0.5, 1e-3 * 0.9, 1e-3, 1e-3, 1e-3];
    assert_eq!(rates, torch);
    let c = parse(&["train.warmup_steps=10", "train.schedule=cosine"]);
    assert_eq!(lr_at(&c, 5, 110, 0), 1e-3 * 0.5);
    assert_eq!(
        lr_at(&c, 10, 110, 0),
        1e-3,
        "the decay starts after the warm-up"
    );
    assert!((lr_at(&c, 60, 110, 0) - 5e-4).abs() < 1e-15, "half way");
    assert!(lr_at(&c, 110, 110, 0).abs() < 1e-15);
    // Without the key the rate is as before, and run.json's config omits it.
    let c = parse(&[]);
    assert_eq!(lr_at(&c, 0, 2000, 0), 1e-3);
    assert_eq!(c.train.warmup_steps, 0);
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("warmup_steps"), "{json}");
}

#[test]
fn transformer_biases_and_init_parse_and_belong_to_the_transformer() {
    let c = config::parse(
        &GOOD.replace("kind = \"mlp\"\nhidden = [16]", "kind = \"transformer\""),
        "x.toml",
        &["model.biases=mlp".into(), "model.init=nanda2023".into()],
    );
    let spec = c.unwrap().model.transformer();
    assert_eq!(spec.biases, config::Biases::Mlp);
    assert_eq!(spec.init, config::TransformerInit::Nanda2023);
    let e = err(GOOD, &["model.biases=none"]);
    assert!(e.to_string().contains("model.kind"), "{e}");
    let e = err(
        &GOOD.replace("kind = \"mlp\"\nhidden = [16]", "kind = \"transformer\""),
        &["model.init=xavier"],
    );
    assert!(e.to_string().contains("model.init"), "{e}");
}
