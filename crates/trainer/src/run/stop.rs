//! The stop rules of an epoch's end, in one place and in their order: a
//! diverged run stops, then a met target (with `stop_at_target`); the last
//! epoch ends the run on its own; then a budget, then the after-epoch hook.

use crate::record::{EpochRecord, Metric, TargetRecord};
use crate::status::RunStatus;
use greentrain_energy::budget::BudgetVerdict;

/// Why a run stops after an epoch.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Stop {
    /// The training loss is not finite.
    Diverged(f64),
    /// The target was met and the config stops there.
    ReachedTarget(Metric, f64),
    /// A budget is spent or predicted to be.
    Budget(String),
    /// The caller's hook (a sweep's pruning) said so.
    Hook(RunStatus),
}

/// What the rules read at an epoch's end.
pub(crate) struct EpochEnd<'a> {
    pub(crate) epoch: &'a EpochRecord,
    /// Whether it was the config's last epoch.
    pub(crate) last: bool,
    /// The target as recorded after this epoch, and whether the config
    /// stops at it.
    pub(crate) target: Option<&'a TargetRecord>,
    pub(crate) stop_at_target: bool,
    pub(crate) budget: BudgetVerdict,
}

/// The first rule that stops the run; the hook is asked only when none of
/// the others did.
pub(crate) fn stop_rule(
    end: EpochEnd<'_>,
    hook: impl FnOnce() -> Option<RunStatus>,
) -> Option<Stop> {
    let e = end.epoch;
    if !e.train_loss.is_finite() {
        return Some(Stop::Diverged(e.train_loss));
    }
    // Reached at this epoch: the record names this epoch as the first.
    let reached = end.target.filter(|t| t.reached && t.epoch == Some(e.epoch));
    if let (Some(t), true) = (reached, end.stop_at_target) {
        let goal = t.accuracy.or(t.loss).unwrap_or_default();
        return Some(Stop::ReachedTarget(t.metric, goal));
    }
    if end.last {
        return None;
    }
    if let BudgetVerdict::Stop(why) = end.budget {
        return Some(Stop::Budget(why));
    }
    hook().map(Stop::Hook)
}

impl Stop {
    /// The status the run ends (or stops for now) with.
    pub(crate) fn status(&self) -> RunStatus {
        match self {
            Stop::Diverged(_) => RunStatus::Diverged,
            Stop::ReachedTarget(..) => RunStatus::ReachedTarget,
            Stop::Budget(_) => RunStatus::StoppedBudget,
            Stop::Hook(s) => *s,
        }
    }

    /// The line that says so after `epoch`.
    pub(crate) fn line(&self, epoch: usize) -> String {
        match self {
            Stop::Diverged(loss) => format!(
                "stopped after epoch {epoch}: the training loss is not finite ({loss}); the run diverged"
            ),
            Stop::ReachedTarget(metric, goal) => {
                let what = if metric.is_accuracy() { "accuracy" } else { "loss" };
                format!("stopped after epoch {epoch}: target {what} {goal} reached")
            }
            Stop::Budget(why) => format!("stopped: {why}; checkpointed after epoch {epoch}"),
            Stop::Hook(s) => format!("stopped after epoch {epoch}: {s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(loss: f64) -> EpochRecord {
        serde_json::from_value(serde_json::json!({
            "epoch": 2, "train_loss": loss, "test_loss": 0.5, "test_accuracy": 0.9,
            "wall_s": 1.0, "eval_s": 0.1, "samples": 10, "samples_per_s": 10.0,
            "lr": 0.1, "loss_scale": 1.0, "skipped_steps": 0, "data_s": 0.0
        }))
        .unwrap()
    }

    fn target(epoch: usize) -> TargetRecord {
        TargetRecord {
            accuracy: Some(0.8),
            loss: None,
            metric: Metric::TestAccuracy,
            reached: true,
            epoch: Some(epoch),
            wall_s: None,
            energy_j: None,
            co2_g: None,
            provenance: None,
        }
    }

    #[test]
    fn rules_apply_in_order_and_the_hook_only_when_none_stops() {
        let (e, t, bad) = (epoch(0.3), target(2), epoch(f64::NAN));
        let end = |e, last, stop_at_target, budget| EpochEnd {
            epoch: e,
            last,
            target: Some(&t),
            stop_at_target,
            budget,
        };
        let stop = BudgetVerdict::Stop("max_kwh".into());
        let never = || -> Option<RunStatus> { panic!("the hook is not asked") };
        let diverged = stop_rule(end(&bad, true, true, stop.clone()), never);
        assert!(matches!(diverged, Some(Stop::Diverged(_))));
        let reached = stop_rule(end(&e, true, true, stop.clone()), never).unwrap();
        assert_eq!(reached.status(), RunStatus::ReachedTarget);
        assert_eq!(
            reached.line(2),
            "stopped after epoch 2: target accuracy 0.8 reached"
        );
        assert_eq!(stop_rule(end(&e, true, false, stop.clone()), never), None);
        let budget = stop_rule(end(&e, false, false, stop), never).unwrap();
        assert_eq!(budget.status(), RunStatus::StoppedBudget);
        let pruned = stop_rule(end(&e, false, false, BudgetVerdict::Ok), || {
            Some(RunStatus::Pruned)
        });
        assert_eq!(pruned, Some(Stop::Hook(RunStatus::Pruned)));
        // A target met at an earlier epoch does not stop this one again.
        let old = target(1);
        let end = EpochEnd {
            target: Some(&old),
            ..end(&e, false, true, BudgetVerdict::Ok)
        };
        assert_eq!(stop_rule(end, || None), None);
    }
}
