//! Predicting a run's total time, energy and CO2 from its first epochs
//! (Carbontracker's idea, without the interactive prompt), and budgets.

use serde::{Deserialize, Serialize};

/// A prediction with an interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Expected value.
    pub mean: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

/// The whole-run prediction made after some epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Epochs the prediction is based on.
    pub after_epochs: usize,
    /// Total epochs.
    pub epochs: usize,
    /// Seconds.
    pub time_s: Estimate,
    /// kWh.
    pub energy_kwh: Estimate,
    /// gCO2eq.
    pub co2_g: Estimate,
}

fn spread(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

fn extrapolate(done: &[f64], remaining: usize) -> Estimate {
    let so_far: f64 = done.iter().sum();
    let (mean, sd) = spread(done);
    let r = remaining as f64;
    // Interval for the sum of the remaining epochs, with epochs independent:
    // +-1.96 sd sqrt(r); with one epoch seen, +-10% of the rest.
    let half = if done.len() > 1 {
        1.96 * sd * r.sqrt()
    } else {
        0.1 * mean * r
    };
    Estimate {
        mean: so_far + mean * r,
        low: (so_far + mean * r - half).max(so_far),
        high: so_far + mean * r + half,
    }
}

/// Predicts the totals from per-epoch seconds and joules so far.
pub fn predict(
    epoch_s: &[f64],
    epoch_j: &[f64],
    epochs: usize,
    g_per_kwh: f64,
    pue: f64,
) -> Prediction {
    let remaining = epochs.saturating_sub(epoch_s.len());
    let time_s = extrapolate(epoch_s, remaining);
    let j = extrapolate(epoch_j, remaining);
    let kwh = |x: f64| x / 3.6e6;
    let energy_kwh = Estimate {
        mean: kwh(j.mean),
        low: kwh(j.low),
        high: kwh(j.high),
    };
    let g = |x: f64| x * g_per_kwh * pue;
    Prediction {
        after_epochs: epoch_s.len(),
        epochs,
        time_s,
        co2_g: Estimate {
            mean: g(energy_kwh.mean),
            low: g(energy_kwh.low),
            high: g(energy_kwh.high),
        },
        energy_kwh,
    }
}

/// Which budget a run hit, and how.
#[derive(Clone, Debug, PartialEq)]
pub enum BudgetVerdict {
    /// Within budget.
    Ok,
    /// Stop now; the message says which budget and why.
    Stop(String),
}

/// Checks the running totals and the prediction against the budgets.
pub fn check(
    used_kwh: f64,
    used_g: f64,
    prediction: Option<&Prediction>,
    max_kwh: Option<f64>,
    max_co2_g: Option<f64>,
) -> BudgetVerdict {
    if let Some(m) = max_kwh {
        if used_kwh >= m {
            return BudgetVerdict::Stop(format!(
                "energy budget reached: {used_kwh:.6} kWh used of max_kwh = {m}"
            ));
        }
        if let Some(p) = prediction {
            if p.energy_kwh.mean > m {
                return BudgetVerdict::Stop(format!(
                    "energy budget would be exceeded: predicted {:.6} kWh (interval {:.6}-{:.6}) after {} of {} epochs, max_kwh = {m}",
                    p.energy_kwh.mean, p.energy_kwh.low, p.energy_kwh.high, p.after_epochs, p.epochs
                ));
            }
        }
    }
    if let Some(m) = max_co2_g {
        if used_g >= m {
            return BudgetVerdict::Stop(format!(
                "carbon budget reached: {used_g:.3} gCO2eq emitted of max_co2_g = {m}"
            ));
        }
        if let Some(p) = prediction {
            if p.co2_g.mean > m {
                return BudgetVerdict::Stop(format!(
                    "carbon budget would be exceeded: predicted {:.3} gCO2eq (interval {:.3}-{:.3}) after {} of {} epochs, max_co2_g = {m}",
                    p.co2_g.mean, p.co2_g.low, p.co2_g.high, p.after_epochs, p.epochs
                ));
            }
        }
    }
    BudgetVerdict::Ok
}
