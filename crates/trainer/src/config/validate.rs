//! Range and consistency checks of a parsed config; each error names the
//! key.

use super::{Config, DatasetKind, ModelKind};

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

type Check = Option<Result<(), (String, String)>>;

fn bad_key(key: &str, msg: &str) -> Check {
    Some(Err((key.to_string(), msg.to_string())))
}

fn validate_transformer(c: &Config) -> Check {
    let m = &c.model;
    let t = m.transformer();
    let transformer_keys = [m.d_model, m.heads, m.d_mlp, m.layers, m.context, m.vocab];
    if m.kind != ModelKind::Transformer {
        let set = transformer_keys.iter().any(Option::is_some)
            || m.causal.is_some()
            || m.activation.is_some()
            || m.norm.is_some()
            || m.tied.is_some()
            || m.biases.is_some()
            || m.init.is_some();
        return set.then(|| bad_key("model.kind", "d_model, heads, d_mlp, layers, context, vocab, causal, activation, norm, tied, biases and init are transformer keys")).flatten();
    }
    if t.d_model == 0 || t.heads == 0 || t.d_mlp == 0 || t.layers == 0 {
        return bad_key(
            "model.d_model",
            "d_model, heads, d_mlp and layers must be at least 1",
        );
    }
    if !t.d_model.is_multiple_of(t.heads) {
        return bad_key("model.heads", "must divide model.d_model");
    }
    None
}

fn validate_modular(c: &Config) -> Check {
    let d = &c.data;
    if d.dataset != DatasetKind::Modular {
        let set = d.p.is_some() || d.op.is_some() || d.train_fraction.is_some();
        return set
            .then(|| {
                bad_key(
                    "data.p",
                    "p, op and train_fraction are for data.dataset = \"modular\"",
                )
            })
            .flatten();
    }
    if !is_prime(d.modulus()) || d.modulus() < 3 || d.modulus() > 251 {
        return bad_key(
            "data.p",
            "must be a prime between 3 and 251 (labels are bytes)",
        );
    }
    if let Some(f) = d.train_fraction {
        if !(f > 0.0 && f < 1.0) {
            return bad_key("data.train_fraction", "must be in (0, 1)");
        }
    }
    None
}

/// Range and consistency checks; returns the offending key and a message.
pub fn validate(c: &Config) -> Result<(), (String, String)> {
    fn bad(key: &str, msg: impl Into<String>) -> Result<(), (String, String)> {
        Err((key.to_string(), msg.into()))
    }
    if c.run.name.trim().is_empty()
        || c.run
            .name
            .chars()
            .any(|ch| !(ch.is_ascii_alphanumeric() || "-_.".contains(ch)))
    {
        return bad(
            "run.name",
            "must be non-empty and use only letters, digits, '-', '_' and '.'",
        );
    }
    if c.data.batch_size == 0 {
        return bad("data.batch_size", "must be at least 1");
    }
    if c.data.eval_batch_size == 0 {
        return bad("data.eval_batch_size", "must be at least 1");
    }
    if !(0.0..0.9).contains(&c.data.val_fraction) {
        return bad("data.val_fraction", "must be in [0, 0.9)");
    }
    if let Some(b) = validate_files(c) {
        return b;
    }
    if let Some(b) = validate_mlp(c) {
        return b;
    }
    if c.model.channels == 0 {
        return bad("model.channels", "must be at least 1");
    }
    if let Some(b) = validate_transformer(c) {
        return b;
    }
    if let Some(b) = validate_modular(c) {
        return b;
    }
    let (depth, width) = (c.model.depth.unwrap_or(20), c.model.width.unwrap_or(16));
    if depth < 8 || (depth - 2) % 6 != 0 {
        return bad(
            "model.depth",
            "must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110)",
        );
    }
    if width == 0 {
        return bad("model.width", "must be at least 1");
    }
    if let Some([b1, b2]) = c.train.betas {
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return bad("train.betas", "both must be in [0, 1)");
        }
    }
    if let Some(b) = validate_targets(c) {
        return b;
    }
    if c.train.epochs == 0 {
        return bad("train.epochs", "must be at least 1");
    }
    if !(c.train.lr.is_finite() && c.train.lr > 0.0) {
        return bad("train.lr", "must be a positive number");
    }
    if !(c.train.weight_decay >= 0.0 && c.train.weight_decay.is_finite()) {
        return bad("train.weight_decay", "must be >= 0");
    }
    if !(0.0..1.0).contains(&c.train.momentum) {
        return bad("train.momentum", "must be in [0, 1)");
    }
    if !(c.train.gamma > 0.0 && c.train.gamma <= 1.0) {
        return bad("train.gamma", "must be in (0, 1]");
    }
    if let Some(n) = c.train.clip_grad_norm {
        if !(n.is_finite() && n > 0.0) {
            return bad("train.clip_grad_norm", "must be a positive number");
        }
    }
    if c.train.accumulate == 0 {
        return bad("train.accumulate", "must be at least 1");
    }
    if c.train.log_every == 0 {
        return bad("train.log_every", "must be at least 1");
    }
    if c.train.steps_per_epoch == Some(0) {
        return bad("train.steps_per_epoch", "must be at least 1");
    }
    if !(c.energy.sample_hz > 0.0 && c.energy.sample_hz <= 100.0) {
        return bad("energy.sample_hz", "must be in (0, 100]");
    }
    if !(c.energy.idle_baseline_s >= 0.0 && c.energy.idle_baseline_s <= 3600.0) {
        return bad("energy.idle_baseline_s", "must be in [0, 3600]");
    }
    if let Some(g) = c.carbon.intensity_g_per_kwh {
        if !(g.is_finite() && g >= 0.0) {
            return bad("carbon.intensity_g_per_kwh", "must be >= 0");
        }
    }
    if !(c.carbon.pue >= 1.0 && c.carbon.pue <= 5.0) {
        return bad("carbon.pue", "must be in [1, 5]");
    }
    if let Some(e) = c.carbon.embodied_g {
        if !(e.is_finite() && e >= 0.0) {
            return bad("carbon.embodied_g", "must be >= 0");
        }
    }
    for (k, v) in [
        ("budget.max_kwh", c.budget.max_kwh),
        ("budget.max_co2_g", c.budget.max_co2_g),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0) {
                return bad(k, "must be a positive number");
            }
            if !c.energy.enabled {
                return bad(
                    k,
                    "a budget needs energy metering ([energy] enabled = true)",
                );
            }
        }
    }
    if c.budget.predict_after_epochs == 0 {
        return bad("budget.predict_after_epochs", "must be at least 1");
    }
    if let Err(e) = c.precision.scaler.validate() {
        return bad(&format!("precision.{}", e.key), e.message);
    }
    Ok(())
}

/// A key that datasets `owners` (named in `who`) need (`required`) or
/// may take, and no other dataset takes.
fn owned_key(
    c: &Config,
    key: &str,
    set: bool,
    owners: &[DatasetKind],
    who: &str,
    required: bool,
) -> Check {
    let owned = owners.contains(&c.data.dataset);
    if owned && required && !set {
        return bad_key(key, &format!("required when data.dataset is {who}"));
    }
    if !owned && set {
        return bad_key(key, &format!("only used with data.dataset = {who}"));
    }
    None
}

/// Each dataset's own keys: required where it needs them, refused where
/// another dataset would ignore them.
fn validate_files(c: &Config) -> Check {
    use DatasetKind::{Cifar10, Csv, Idx, ImageFolder, Npz, Text};
    let d = &c.data;
    let files = [Npz, Csv, ImageFolder];
    let images = [Cifar10, ImageFolder];
    let checks = [
        (
            "data.train_images",
            d.train_images.is_some(),
            &[Idx][..],
            "\"idx\"",
            true,
        ),
        (
            "data.train_labels",
            d.train_labels.is_some(),
            &[Idx][..],
            "\"idx\"",
            true,
        ),
        (
            "data.test_images",
            d.test_images.is_some(),
            &[Idx][..],
            "\"idx\"",
            true,
        ),
        (
            "data.test_labels",
            d.test_labels.is_some(),
            &[Idx][..],
            "\"idx\"",
            true,
        ),
        (
            "data.train",
            d.train.is_some(),
            &files[..],
            "\"npz\", \"csv\" or \"image_folder\"",
            true,
        ),
        (
            "data.test",
            d.test.is_some(),
            &files[..],
            "\"npz\", \"csv\" or \"image_folder\"",
            true,
        ),
        (
            "data.normalize",
            d.normalize,
            &files[..],
            "\"npz\", \"csv\" or \"image_folder\"",
            false,
        ),
        (
            "data.label",
            d.label.is_some(),
            &[Csv][..],
            "\"csv\" (the label column's name)",
            true,
        ),
        (
            "data.path",
            d.path.is_some(),
            &[Cifar10, Text][..],
            "\"cifar10\" or \"text\"",
            true,
        ),
        (
            "data.augment",
            d.augment.is_some(),
            &images[..],
            "\"cifar10\" or \"image_folder\"",
            false,
        ),
        (
            "data.image_size",
            d.image_size.is_some(),
            &[ImageFolder][..],
            "\"image_folder\"",
            false,
        ),
        (
            "data.channels",
            d.channels.is_some(),
            &[ImageFolder][..],
            "\"image_folder\"",
            false,
        ),
        (
            "data.skip_bad",
            d.skip_bad,
            &[ImageFolder][..],
            "\"image_folder\"",
            false,
        ),
        (
            "data.tokens",
            d.tokens.is_some(),
            &[Text][..],
            "\"text\"",
            false,
        ),
        (
            "data.test_fraction",
            d.test_fraction.is_some(),
            &[Text][..],
            "\"text\"",
            false,
        ),
    ];
    for (key, set, owners, who, required) in checks {
        if let Some(b) = owned_key(c, key, set, owners, who, required) {
            return Some(b);
        }
    }
    if d.image_size.is_some_and(|s| !(4..=1024).contains(&s)) {
        return bad_key("data.image_size", "must be in 4..=1024");
    }
    if d.channels.is_some_and(|ch| ch != 1 && ch != 3) {
        return bad_key("data.channels", "must be 1 (grey) or 3 (RGB)");
    }
    if d.test_fraction.is_some_and(|f| !(f > 0.0 && f < 1.0)) {
        return bad_key("data.test_fraction", "must be in (0, 1)");
    }
    if d.dataset == Text && (c.model.kind != ModelKind::Transformer || c.model.context.is_none()) {
        return bad_key(
            "model.context",
            "data.dataset = \"text\" trains a transformer (model.kind = \"transformer\") over model.context tokens: set both",
        );
    }
    None
}

/// Targets, and the schedule's own keys.
fn validate_targets(c: &Config) -> Check {
    let t = &c.train;
    if t.target_accuracy.is_some() && t.target_loss.is_some() {
        return bad_key(
            "train.target_loss",
            "one target at a time: train.target_accuracy or train.target_loss",
        );
    }
    if t.target_accuracy.is_some_and(|a| !(a > 0.0 && a <= 1.0)) {
        return bad_key("train.target_accuracy", "must be in (0, 1]");
    }
    if t.target_loss.is_some_and(|l| !(l.is_finite() && l > 0.0)) {
        return bad_key("train.target_loss", "must be a positive number");
    }
    if t.stop_at_target && t.target_accuracy.is_none() && t.target_loss.is_none() {
        return bad_key(
            "train.stop_at_target",
            "needs train.target_accuracy or train.target_loss",
        );
    }
    if t.step_epochs == 0 {
        return bad_key("train.step_epochs", "must be at least 1");
    }
    let milestones = t.schedule == super::Schedule::Milestones;
    if milestones && t.milestones.is_empty() {
        return bad_key(
            "train.milestones",
            "required when train.schedule = \"milestones\"",
        );
    }
    if !milestones && !t.milestones.is_empty() {
        return bad_key(
            "train.milestones",
            "only used with train.schedule = \"milestones\"",
        );
    }
    if t.milestones.windows(2).any(|w| w[0] >= w[1]) || t.milestones.contains(&0) {
        return bad_key(
            "train.milestones",
            "must be ascending optimizer steps, each at least 1",
        );
    }
    None
}

/// The MLP's widths, and `residual` where some layer can add its input.
fn validate_mlp(c: &Config) -> Check {
    if c.model.hidden.contains(&0) {
        return bad_key("model.hidden", "every layer needs at least 1 unit");
    }
    if c.model.residual != Some(true) {
        return None;
    }
    if c.model.kind != ModelKind::Mlp {
        return bad_key("model.residual", "only used with model.kind = \"mlp\"");
    }
    if !c.model.hidden.windows(2).any(|w| w[0] == w[1]) {
        return bad_key(
            "model.residual",
            "no hidden layer after the first has its input's width, so none can add its input",
        );
    }
    None
}
