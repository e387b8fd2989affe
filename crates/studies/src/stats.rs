//! Small statistics for benchmarks: mean, sample standard deviation, and
//! paired-ratio confidence intervals (Student's t, two-sided 95%).

use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for one value.
    pub sd: f64,
    /// Number of values.
    pub n: usize,
}

/// Summarises `v` (which must not be empty).
pub fn summary(v: &[f64]) -> Summary {
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Summary { mean, sd, n }
}

/// Two-sided 95% Student-t quantile for `df` degrees of freedom.
pub fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= 30 => T[d - 1],
        _ => 1.96,
    }
}

/// A ratio against a baseline with its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Mean of the per-pair ratios.
    pub mean: f64,
    /// Lower end of the 95% interval; absent with a single pair, where
    /// there is no interval (not a NaN one, which JSON cannot hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    /// Upper end; absent with `low`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
    /// Pairs.
    pub n: usize,
}

/// Ratio `a[i] / b[i]` over paired repeats: mean +- t95(n-1) sd / sqrt(n).
pub fn paired_ratio(a: &[f64], b: &[f64]) -> Ratio {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    let s = summary(&r);
    let half = (s.n > 1).then(|| t95(s.n - 1) * s.sd / (s.n as f64).sqrt());
    Ratio {
        mean: s.mean,
        low: half.map(|h| s.mean - h),
        high: half.map(|h| s.mean + h),
        n: s.n,
    }
}

/// Ratio `a[i] / b[i]` over paired repeats as a geometric mean, with the
/// t-interval taken on the logarithms and mapped back: the ends stay
/// positive and a halving and a doubling weigh the same (for energy ratios,
/// which a few repeats can spread widely).
pub fn paired_log_ratio(a: &[f64], b: &[f64]) -> Ratio {
    let logs: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x / y).ln()).collect();
    let s = summary(&logs);
    let half = (s.n > 1).then(|| t95(s.n - 1) * s.sd / (s.n as f64).sqrt());
    Ratio {
        mean: s.mean.exp(),
        low: half.map(|h| (s.mean - h).exp()),
        high: half.map(|h| (s.mean + h).exp()),
        n: s.n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_paired_ratio_match_hand_computation() {
        let s = summary(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.mean, 5.0);
        assert!((s.sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        // Ratios 0.5, 0.6, 0.7: mean 0.6, sd 0.1, t(2) = 4.303, half = 4.303 * 0.1 / sqrt(3).
        let r = paired_ratio(&[1.0, 1.2, 1.4], &[2.0, 2.0, 2.0]);
        assert!((r.mean - 0.6).abs() < 1e-12);
        let half = 4.303 * 0.1 / 3f64.sqrt();
        assert!((r.low.unwrap() - (0.6 - half)).abs() < 1e-9);
        assert!((r.high.unwrap() - (0.6 + half)).abs() < 1e-9);
        let one = paired_ratio(&[1.0], &[2.0]);
        assert_eq!((one.low, one.high, one.mean), (None, None, 0.5));
        assert_eq!(t95(1), 12.706);
        // Ratios 0.5 and 2: geometric mean 1; logs -ln2, ln2 have sd
        // ln2 * sqrt(2), so the half-width is 12.706 * ln2 on the log scale.
        let g = paired_log_ratio(&[1.0, 4.0], &[2.0, 2.0]);
        assert!((g.mean - 1.0).abs() < 1e-12);
        let h = 12.706 * 2f64.ln();
        assert!((g.low.unwrap() - (-h).exp()).abs() < 1e-12);
        assert!((g.high.unwrap() - h.exp()).abs() < 1e-6 * h.exp());
        assert!(g.low.unwrap() > 0.0);
        assert_eq!(t95(100), 1.96);
    }
}
