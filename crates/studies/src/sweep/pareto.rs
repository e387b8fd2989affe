//! Several objectives at once: the Pareto front of finished trials, and
//! the random scalarisation that lets TPE search towards it (ParEGO,
//! Knowles 2006).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;

/// Whether `a` dominates `b`: no worse on every objective and better on one.
/// `maximise[i]` says which way objective `i` improves.
pub fn dominates(a: &[f64], b: &[f64], maximise: &[bool]) -> bool {
    let mut better = false;
    for ((&x, &y), &max) in a.iter().zip(b).zip(maximise) {
        let (x, y) = if max { (x, y) } else { (-x, -y) };
        if x < y {
            return false;
        }
        better |= x > y;
    }
    better
}

/// Orders two value vectors objective by objective, best first.
fn objective_order(a: &[f64], b: &[f64], maximise: &[bool]) -> Ordering {
    for ((&x, &y), &max) in a.iter().zip(b).zip(maximise) {
        let o = if max {
            y.total_cmp(&x)
        } else {
            x.total_cmp(&y)
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// The ids of the non-dominated points, best on the first objective first
/// (then the second, ..., then the id). Points with equal values dominate
/// neither each other, so duplicates are all on the front. Points with a
/// non-finite value are left out.
pub fn front(points: &[(usize, Vec<f64>)], maximise: &[bool]) -> Vec<usize> {
    let ok: Vec<&(usize, Vec<f64>)> = points
        .iter()
        .filter(|(_, v)| v.len() == maximise.len() && v.iter().all(|x| x.is_finite()))
        .collect();
    let mut out: Vec<&(usize, Vec<f64>)> = ok
        .iter()
        .filter(|(_, v)| !ok.iter().any(|(_, w)| dominates(w, v, maximise)))
        .copied()
        .collect();
    out.sort_by(|a, b| objective_order(&a.1, &b.1, maximise).then(a.0.cmp(&b.0)));
    out.into_iter().map(|p| p.0).collect()
}

/// ParEGO's augmented Tchebycheff weight on the sum term.
const RHO: f64 = 0.05;

/// One scalar per point to maximise, under weights drawn at random from the
/// simplex: each objective is scaled to [0, 1] over the points (0 the best
/// seen, 1 the worst; a missing value counts as the worst), and the score is
/// `-(max_i w_i f_i + rho * sum_i w_i f_i)`. A new draw per proposal makes
/// successive proposals aim at different parts of the front.
pub fn scalarise(values: &[Vec<Option<f64>>], maximise: &[bool], rng: &mut ChaCha8Rng) -> Vec<f64> {
    let k = maximise.len();
    // Uniform on the simplex: normalised exponentials.
    let e: Vec<f64> = (0..k)
        .map(|_| -rng.random_range(f64::EPSILON..1.0f64).ln())
        .collect();
    let sum: f64 = e.iter().sum();
    let w: Vec<f64> = e.iter().map(|x| x / sum).collect();
    let range: Vec<(f64, f64)> = (0..k)
        .map(|i| {
            values
                .iter()
                .filter_map(|v| v[i].filter(|x| x.is_finite()))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                    (lo.min(x), hi.max(x))
                })
        })
        .collect();
    values
        .iter()
        .map(|v| {
            let f: Vec<f64> = (0..k)
                .map(|i| {
                    let (lo, hi) = range[i];
                    match v[i].filter(|x| x.is_finite()) {
                        None => 1.0,
                        Some(_) if hi <= lo => 0.0,
                        Some(x) if maximise[i] => (hi - x) / (hi - lo),
                        Some(x) => (x - lo) / (hi - lo),
                    }
                })
                .collect();
            let wf = f.iter().zip(&w).map(|(a, b)| a * b);
            -(wf.clone().fold(0.0, f64::max) + RHO * wf.sum::<f64>())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const ACC_ENERGY: [bool; 2] = [true, false];

    fn pts(v: &[(f64, f64)]) -> Vec<(usize, Vec<f64>)> {
        v.iter()
            .enumerate()
            .map(|(i, &(a, e))| (i, vec![a, e]))
            .collect()
    }

    #[test]
    fn the_front_of_accuracy_against_energy_matches_a_hand_computed_one() {
        // (accuracy, joules). 0: (0.90, 100) front; 1: (0.95, 200) front;
        // 2: (0.93, 250) dominated by 1; 3: (0.97, 400) front;
        // 4: (0.85, 150) dominated by 0; 5: (0.97, 500) dominated by 3.
        let p = pts(&[
            (0.90, 100.0),
            (0.95, 200.0),
            (0.93, 250.0),
            (0.97, 400.0),
            (0.85, 150.0),
            (0.97, 500.0),
        ]);
        // Objective order: highest accuracy first.
        assert_eq!(front(&p, &ACC_ENERGY), vec![3, 1, 0]);
    }

    #[test]
    fn ties_and_duplicates() {
        // 0 and 2 are the same point: both on the front. 1 ties 0 on
        // accuracy and spends more: dominated. 3 ties 0 on energy with
        // less accuracy: dominated.
        let p = pts(&[(0.9, 100.0), (0.9, 120.0), (0.9, 100.0), (0.8, 100.0)]);
        assert_eq!(front(&p, &ACC_ENERGY), vec![0, 2]);
        // Every point equal: all on the front, by id.
        let same = pts(&[(0.5, 1.0), (0.5, 1.0), (0.5, 1.0)]);
        assert_eq!(front(&same, &ACC_ENERGY), vec![0, 1, 2]);
    }

    #[test]
    fn one_trial_none_and_non_finite_values() {
        assert_eq!(front(&pts(&[(0.5, 10.0)]), &ACC_ENERGY), vec![0]);
        assert!(front(&[], &ACC_ENERGY).is_empty());
        // A NaN or infinite value leaves the point out, and it dominates nothing.
        let p = pts(&[(f64::NAN, 1.0), (0.5, 10.0), (0.9, f64::INFINITY)]);
        assert_eq!(front(&p, &ACC_ENERGY), vec![1]);
    }

    #[test]
    fn one_objective_keeps_the_best_and_its_ties() {
        let p: Vec<(usize, Vec<f64>)> = [0.3, 0.7, 0.7, 0.1]
            .iter()
            .enumerate()
            .map(|(i, &a)| (i, vec![a]))
            .collect();
        assert_eq!(front(&p, &[true]), vec![1, 2]);
        assert_eq!(front(&p, &[false]), vec![3]);
    }

    #[test]
    fn three_objectives() {
        // (accuracy max, energy min, seconds min): 2 is worse than 0 on
        // all three; 1 trades accuracy for time.
        let p = vec![
            (0, vec![0.9, 10.0, 5.0]),
            (1, vec![0.8, 10.0, 2.0]),
            (2, vec![0.85, 12.0, 6.0]),
        ];
        assert_eq!(front(&p, &[true, false, false]), vec![0, 1]);
    }

    #[test]
    fn the_scalarisation_ranks_a_dominating_point_higher_under_any_weights() {
        let values = vec![
            vec![Some(0.9), Some(100.0)],
            vec![Some(0.8), Some(200.0)],
            vec![Some(0.85), None],
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let s = scalarise(&values, &ACC_ENERGY, &mut rng);
            // 0 is best on both: score 0; 1 worst on both: the lowest.
            assert_eq!(s[0], 0.0);
            assert!(s[1] <= s[2], "{s:?}");
            assert!(s[1] < 0.0);
        }
    }
}
