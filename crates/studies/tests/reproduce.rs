//! `reproduce`'s comparison: what each tolerance compares.

use greentrain_studies::reproduce::{compare, Tolerance};
use greentrain_trainer::record::EpochRecord;

fn epoch(loss: f64, acc: f64, scale: f64, skipped: u64) -> EpochRecord {
    EpochRecord {
        epoch: 1,
        train_loss: loss,
        train_accuracy: Some(acc),
        test_loss: loss,
        test_accuracy: acc,
        val_loss: None,
        val_accuracy: None,
        wall_s: 1.0,
        eval_s: 0.1,
        samples: 100,
        samples_per_s: 100.0,
        lr: 1e-3,
        loss_scale: scale,
        skipped_steps: skipped,
        data_s: 0.0,
        energy_j: None,
        co2_g: None,
        checkpoint_s: None,
        checkpoint_j: None,
        test_perplexity: None,
        val_perplexity: None,
    }
}

#[test]
fn gpu_tolerance_lists_only_what_it_compares() {
    let a = [epoch(0.5, 0.90, 65536.0, 0)];
    let b = [epoch(0.505, 0.903, 32768.0, 3)];
    let gpu = compare(&a, &b, Tolerance::Gpu);
    let names: Vec<&str> = gpu.iter().map(|c| c.metric.as_str()).collect();
    assert_eq!(
        names,
        [
            "epoch 1 train_loss",
            "epoch 1 train_accuracy",
            "epoch 1 test_loss",
            "epoch 1 test_accuracy"
        ]
    );
    assert!(gpu.iter().all(|c| c.matches));
    assert!(Tolerance::Gpu
        .describe()
        .contains("skipped_steps not compared"));
    // The exact tolerance compares all six, and the differing counts fail.
    let exact = compare(&a, &b, Tolerance::Exact);
    assert_eq!(exact.len(), 6);
    assert!(!exact
        .iter()
        .any(|c| c.metric.ends_with("skipped_steps") && c.matches));
    // A record from before training accuracy was kept: not compared.
    let mut old = epoch(0.5, 0.90, 65536.0, 0);
    old.train_accuracy = None;
    let names: Vec<String> = compare(&[old], &b, Tolerance::Gpu)
        .into_iter()
        .map(|c| c.metric)
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("train_accuracy")),
        "{names:?}"
    );
    // Outside the GPU tolerance: 3% loss difference.
    let c = [epoch(0.515, 0.90, 65536.0, 0)];
    assert!(compare(&a, &c, Tolerance::Gpu).iter().any(|c| !c.matches));
}
