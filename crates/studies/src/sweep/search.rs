//! Where the next trial goes: random sampling, TPE, the grid, and ASHA's
//! rungs and promotion rule.

use super::spec::{toml_text, AshaSection, Dim, Params, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

fn sample_dim(d: &Dim, rng: &mut ChaCha8Rng) -> Value {
    match d {
        Dim::LogUniform([a, b]) => Value::Float((rng.random_range(a.ln()..=b.ln())).exp()),
        Dim::Uniform([a, b]) => Value::Float(rng.random_range(*a..=*b)),
        Dim::Int([a, b]) => Value::Int(rng.random_range(*a..=*b)),
        Dim::Choice(v) => Value::Text(toml_text(&v[rng.random_range(0..v.len())])),
    }
}

/// Trial `id`'s generator: its draws depend on the search seed and the
/// trial, not on which trials ran before it.
pub(super) fn trial_rng(seed: u64, id: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id as u64)
}

/// Random search's trial `id` (also TPE's start-up trials and the Slurm export).
pub(super) fn random_params(space: &BTreeMap<String, Dim>, seed: u64, id: usize) -> Params {
    let mut rng = trial_rng(seed, id);
    space
        .iter()
        .map(|(k, d)| (k.clone(), sample_dim(d, &mut rng)))
        .collect()
}

/// Internal coordinate of a numeric value (log for log-uniform).
fn coord(d: &Dim, v: &Value) -> Option<f64> {
    match (d, v) {
        (Dim::LogUniform(_), Value::Float(x)) => Some(x.ln()),
        (Dim::Uniform(_), Value::Float(x)) => Some(*x),
        (Dim::Int(_), Value::Int(i)) => Some(*i as f64),
        _ => None,
    }
}

fn bounds(d: &Dim) -> (f64, f64) {
    match d {
        Dim::LogUniform([a, b]) => (a.ln(), b.ln()),
        Dim::Uniform([a, b]) => (*a, *b),
        Dim::Int([a, b]) => (*a as f64 - 0.5, *b as f64 + 0.5),
        Dim::Choice(_) => (0.0, 1.0),
    }
}

fn from_coord(d: &Dim, x: f64) -> Value {
    match d {
        Dim::LogUniform([a, b]) => Value::Float(x.exp().clamp(*a, *b)),
        Dim::Uniform([a, b]) => Value::Float(x.clamp(*a, *b)),
        Dim::Int([a, b]) => Value::Int((x.round() as i64).clamp(*a, *b)),
        Dim::Choice(_) => unreachable!("choices have no coordinate"),
    }
}

/// Standard normal CDF (Abramowitz and Stegun 7.1.26, error < 1.5e-7).
fn phi(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let y = 1.0
        - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
            + 0.254829592)
            * t
            * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + y)
    } else {
        0.5 * (1.0 - y)
    }
}

/// A Parzen estimator: truncated Gaussians at the observations plus a
/// prior Gaussian over the whole range, equally weighted.
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    fn new(obs: &[f64], lo: f64, hi: f64) -> Self {
        let range = hi - lo;
        let mut mus: Vec<f64> = obs.to_vec();
        mus.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = mus.len();
        let min_s = range / (100.0f64).min(1.0 + n as f64);
        let mut sigmas = Vec::with_capacity(n + 1);
        for i in 0..n {
            let left = if i == 0 {
                mus[i] - lo
            } else {
                mus[i] - mus[i - 1]
            };
            let right = if i + 1 == n {
                hi - mus[i]
            } else {
                mus[i + 1] - mus[i]
            };
            sigmas.push(left.max(right).clamp(min_s, range));
        }
        mus.push(0.5 * (lo + hi));
        sigmas.push(range);
        Parzen {
            mus,
            sigmas,
            lo,
            hi,
        }
    }

    fn pdf(&self, x: f64) -> f64 {
        let k = self.mus.len() as f64;
        self.mus
            .iter()
            .zip(&self.sigmas)
            .map(|(&m, &s)| {
                let z = (x - m) / s;
                let mass = phi((self.hi - m) / s) - phi((self.lo - m) / s);
                (-0.5 * z * z).exp() / (s * (2.0 * std::f64::consts::PI).sqrt() * mass.max(1e-12))
            })
            .sum::<f64>()
            / k
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        let i = rng.random_range(0..self.mus.len());
        for _ in 0..100 {
            // Box-Muller.
            let u1: f64 = rng.random_range(f64::EPSILON..1.0);
            let u2: f64 = rng.random_range(0.0..1.0);
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let x = self.mus[i] + self.sigmas[i] * z;
            if x >= self.lo && x <= self.hi {
                return x;
            }
        }
        self.mus[i].clamp(self.lo, self.hi)
    }
}

const TPE_CANDIDATES: usize = 24;

/// TPE: split finished trials at the top quarter of the metric; per
/// dimension, draw candidates from the good trials' density l(x) and keep
/// the one with the highest l(x)/g(x).
pub(super) fn tpe_propose(
    space: &BTreeMap<String, Dim>,
    done: &[(Params, f64)],
    rng: &mut ChaCha8Rng,
) -> Params {
    let mut sorted: Vec<&(Params, f64)> = done.iter().collect();
    sorted.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let n_good = done.len().div_ceil(4).max(1);
    let (good, bad) = sorted.split_at(n_good.min(sorted.len()));
    let mut out = Params::new();
    for (k, d) in space {
        let v = match d {
            Dim::Choice(vals) => {
                let texts: Vec<String> = vals.iter().map(toml_text).collect();
                let weights = |set: &[&(Params, f64)]| -> Vec<f64> {
                    let mut w = vec![1.0; texts.len()];
                    for (p, _) in set {
                        if let Some(Value::Text(t)) = p.get(k) {
                            if let Some(i) = texts.iter().position(|x| x == t) {
                                w[i] += 1.0;
                            }
                        }
                    }
                    let s: f64 = w.iter().sum();
                    w.iter().map(|x| x / s).collect()
                };
                let (l, g) = (weights(good), weights(bad));
                let mut best = (f64::NEG_INFINITY, 0);
                for _ in 0..TPE_CANDIDATES {
                    let mut r: f64 = rng.random_range(0.0..1.0);
                    let mut i = 0;
                    while i + 1 < l.len() && r >= l[i] {
                        r -= l[i];
                        i += 1;
                    }
                    let score = l[i].ln() - g[i].ln();
                    if score > best.0 {
                        best = (score, i);
                    }
                }
                Value::Text(texts[best.1].clone())
            }
            _ => {
                let (lo, hi) = bounds(d);
                let obs = |set: &[&(Params, f64)]| -> Vec<f64> {
                    set.iter()
                        .filter_map(|(p, _)| p.get(k).and_then(|v| coord(d, v)))
                        .collect()
                };
                let (l, g) = (
                    Parzen::new(&obs(good), lo, hi),
                    Parzen::new(&obs(bad), lo, hi),
                );
                let mut best = (f64::NEG_INFINITY, 0.5 * (lo + hi));
                for _ in 0..TPE_CANDIDATES {
                    let x = l.sample(rng);
                    let score = l.pdf(x).max(1e-300).ln() - g.pdf(x).max(1e-300).ln();
                    if score > best.0 {
                        best = (score, x);
                    }
                }
                from_coord(d, best.1)
            }
        };
        out.insert(k.clone(), v);
    }
    out
}

/// The grid, in a fixed order: every choice, and `levels` evenly spaced
/// values per numeric dimension (log-spaced for log-uniform), at most
/// `trials` points.
pub fn grid(space: &BTreeMap<String, Dim>, trials: usize, levels: Option<usize>) -> Vec<Params> {
    // A one-value integer range (a fixed setting) is not a dimension.
    let numeric = space
        .values()
        .filter(|d| match d {
            Dim::Choice(_) => false,
            Dim::Int([a, b]) => a < b,
            _ => true,
        })
        .count() as u32;
    let choice_points: usize = space
        .values()
        .map(|d| if let Dim::Choice(v) = d { v.len() } else { 1 })
        .product();
    let k = levels.unwrap_or_else(|| {
        if numeric == 0 {
            1
        } else {
            let mut k = 1usize;
            while (k + 1).pow(numeric) * choice_points <= trials {
                k += 1;
            }
            k.max(2)
        }
    });
    let axes: Vec<(String, Vec<Value>)> = space
        .iter()
        .map(|(key, d)| {
            let lin = |a: f64, b: f64| -> Vec<f64> {
                if k == 1 {
                    vec![0.5 * (a + b)]
                } else {
                    (0..k)
                        .map(|i| a + (b - a) * i as f64 / (k - 1) as f64)
                        .collect()
                }
            };
            let vals = match d {
                Dim::Choice(v) => v.iter().map(|x| Value::Text(toml_text(x))).collect(),
                Dim::LogUniform([a, b]) => lin(a.ln(), b.ln())
                    .into_iter()
                    .map(|x| Value::Float(x.exp()))
                    .collect(),
                Dim::Uniform([a, b]) => lin(*a, *b).into_iter().map(Value::Float).collect(),
                Dim::Int([a, b]) => {
                    let mut v: Vec<i64> = lin(*a as f64, *b as f64)
                        .into_iter()
                        .map(|x| x.round() as i64)
                        .collect();
                    v.dedup();
                    v.into_iter().map(Value::Int).collect()
                }
            };
            (key.clone(), vals)
        })
        .collect();
    let mut out = vec![Params::new()];
    for (key, vals) in &axes {
        let mut next = vec![];
        for p in &out {
            for v in vals {
                let mut q = p.clone();
                q.insert(key.clone(), v.clone());
                next.push(q);
            }
        }
        out = next;
    }
    out.truncate(trials);
    out
}

// ---------- ASHA ----------

/// Rung epochs: `min x reduction^k` below the run's epochs.
pub fn rungs(a: &AshaSection, epochs: usize) -> Vec<usize> {
    let mut v = vec![];
    let mut r = a.min_epochs;
    while r < epochs {
        v.push(r);
        r *= a.reduction;
    }
    v
}

/// Optuna's successive-halving rule: at a rung holding `n` values
/// (this one included), a trial goes on when its value is at least the
/// `max(n / reduction, 1)`-th best.
pub fn promotable(rung_values: &[f64], value: f64, reduction: usize) -> bool {
    let mut v = rung_values.to_vec();
    v.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    let idx = (v.len() / reduction).max(1) - 1;
    value >= v[idx]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_follows_optunas_rule() {
        // Fewer than `reduction` values: only the best so far goes on.
        assert!(promotable(&[0.5], 0.5, 3));
        assert!(!promotable(&[0.9, 0.5], 0.5, 3));
        // Six values, reduction 3: the top two go on.
        let v = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        assert!(promotable(&v, 0.5, 3));
        assert!(!promotable(&v, 0.4, 3));
    }

    #[test]
    fn rungs_grow_by_the_reduction_factor_below_the_epoch_count() {
        let a = AshaSection {
            min_epochs: 1,
            reduction: 3,
        };
        assert_eq!(rungs(&a, 30), vec![1, 3, 9, 27]);
        assert_eq!(rungs(&a, 9), vec![1, 3]);
    }

    #[test]
    fn the_grid_spans_each_range_and_stops_at_the_trial_count() {
        let mut space = BTreeMap::new();
        space.insert("train.lr".to_string(), Dim::LogUniform([1e-4, 1e-2]));
        space.insert(
            "model.hidden".to_string(),
            Dim::Choice(vec![toml::Value::Integer(1), toml::Value::Integer(2)]),
        );
        let g = grid(&space, 6, None);
        // 2 choices x 3 levels = 6.
        assert_eq!(g.len(), 6);
        let lrs: Vec<f64> = g
            .iter()
            .filter_map(|p| match p["train.lr"] {
                Value::Float(f) => Some(f),
                _ => None,
            })
            .collect();
        assert!(
            (lrs[0] - 1e-4).abs() < 1e-12
                && (lrs[1] - 1e-3).abs() < 1e-12
                && (lrs[2] - 1e-2).abs() < 1e-12,
            "{lrs:?}"
        );
        assert_eq!(grid(&space, 4, None).len(), 4);
    }

    #[test]
    fn tpe_moves_towards_the_good_region() {
        // Metric peaks at x = 0.8 in [0, 1]; after 20 random observations
        // TPE's proposals should sit closer to it than uniform ones do.
        let mut space = BTreeMap::new();
        space.insert("x".to_string(), Dim::Uniform([0.0, 1.0]));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let f = |x: f64| -(x - 0.8).powi(2);
        let mut done = vec![];
        for _ in 0..20 {
            let x: f64 = rng.random_range(0.0..1.0);
            let mut p = Params::new();
            p.insert("x".into(), Value::Float(x));
            done.push((p, f(x)));
        }
        let mut dist = 0.0;
        for _ in 0..50 {
            let p = tpe_propose(&space, &done, &mut rng);
            if let Value::Float(x) = p["x"] {
                dist += (x - 0.8).abs();
            }
        }
        // Uniform proposals would average |x - 0.8| = 0.34.
        assert!(dist / 50.0 < 0.15, "{}", dist / 50.0);
    }

    #[test]
    fn the_normal_cdf_is_accurate() {
        assert!((phi(0.0) - 0.5).abs() < 1e-7);
        assert!((phi(1.96) - 0.975).abs() < 1e-4);
        assert!((phi(-1.0) - 0.158_655_3).abs() < 1e-6);
    }
}
