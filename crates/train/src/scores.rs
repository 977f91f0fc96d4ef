//! Scores that compare a model that only *samples* next states (a cVAE, an RSSM, an ensemble)
//! with one that has a density (a Gaussian MLP) on the same footing: each needs nothing but
//! samples from the model, and the observed next state or a sample of true next states.
//!
//! - [`energy_score`]: the proper scoring rule `ES(P, y) = E‖X − y‖ − ½ E‖X − X′‖` (Gneiting
//!   & Raftery 2007), lower is better, minimised in expectation by the true law.
//! - [`energy_distance`]: `2 E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖` between two sample sets (0 iff
//!   the laws are equal).
//! - [`mmd2_unbiased`] / [`mmd2_median_heuristic`]: squared maximum mean discrepancy with an
//!   RBF kernel, the unbiased U-statistic `MMD²_u` of Gretton et al. 2012 (JMLR, eq. 3), the
//!   bandwidth by the median heuristic ([`median_heuristic_bandwidth`]).
//! - [`mode_coverage`]: which known modes of the true law the model's samples reach.
//! - [`nll_floor`]: the true law's entropy `H = −E[log p(s′ | s, a)]`, by Monte Carlo from the
//!   environment's density: the expected NLL no model can beat.
//!
//! Samples are rows `&[Vec<f32>]` of equal width; distances are Euclidean, computed in `f64`.
//! Every function checks its inputs and returns a [`ScoreError`] rather than panicking.

use rand::RngCore;
use wm_envs::{Action, Mode, StochasticTransition};

/// What is wrong with the inputs of a score.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// A set of samples has fewer rows than the score needs.
    #[error("{what}: needs at least {needed} samples, got {got}")]
    TooFewSamples {
        /// Which input.
        what: &'static str,
        /// The least number of rows.
        needed: usize,
        /// The number given.
        got: usize,
    },
    /// Rows of different widths were mixed.
    #[error("{what}: row {row} has {got} values, expected {expected}")]
    WidthMismatch {
        /// Which input.
        what: &'static str,
        /// Index of the first offending row.
        row: usize,
        /// The width of the first row (or of the observation).
        expected: usize,
        /// The offending row's width.
        got: usize,
    },
    /// A sample or an observation holds NaN or an infinity.
    #[error("{what}: row {row} holds a non-finite value")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Index of the offending row.
        row: usize,
    },
    /// A parameter of the score is out of range.
    #[error("`{name}` must be {range}, got {value}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The allowed range, in words.
        range: &'static str,
        /// The value given.
        value: f64,
    },
    /// The environment could not sample or evaluate its transition.
    #[error("the true transition failed: {0}")]
    Env(#[from] wm_envs::EnvError),
}

/// Checks that `rows` has at least `needed` rows, all of width `width` (or of the first row's
/// width when `None`), all finite; returns the width.
fn check_rows(
    what: &'static str,
    rows: &[Vec<f32>],
    needed: usize,
    width: Option<usize>,
) -> Result<usize, ScoreError> {
    if rows.len() < needed {
        return Err(ScoreError::TooFewSamples {
            what,
            needed,
            got: rows.len(),
        });
    }
    let expected = width.unwrap_or_else(|| rows.first().map_or(0, Vec::len));
    for (row, values) in rows.iter().enumerate() {
        if values.len() != expected {
            return Err(ScoreError::WidthMismatch {
                what,
                row,
                expected,
                got: values.len(),
            });
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(ScoreError::NonFinite { what, row });
        }
    }
    Ok(expected)
}

/// Euclidean distance in `f64`.
fn distance(a: &[f32], b: &[f32]) -> f64 {
    squared_distance(a, b).sqrt()
}

fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum()
}

/// Mean of `f(a, b)` over the ordered pairs `i ≠ j` of `rows` (the U-statistic; needs 2 rows).
fn mean_within(rows: &[Vec<f32>], f: impl Fn(&[f32], &[f32]) -> f64) -> f64 {
    let n = rows.len();
    let mut sum = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            sum += f(&rows[i], &rows[j]);
        }
    }
    // Each unordered pair stands for two ordered ones.
    2.0 * sum / (n * (n - 1)) as f64
}

/// Mean of `f(a, b)` over all pairs of one row of `first` and one of `second`.
fn mean_between(first: &[Vec<f32>], second: &[Vec<f32>], f: impl Fn(&[f32], &[f32]) -> f64) -> f64 {
    let sum: f64 = first
        .iter()
        .flat_map(|a| second.iter().map(move |b| (a, b)))
        .map(|(a, b)| f(a, b))
        .sum();
    sum / (first.len() * second.len()) as f64
}

/// The energy score of the samples `samples` (from the model, `S >= 2`) at the observation
/// `observation`, with the fair (unbiased) estimator of the spread term:
///
/// `ES = (1/S) Σᵢ ‖Xᵢ − y‖ − 1/(2 S (S−1)) Σ_{i≠j} ‖Xᵢ − Xⱼ‖`.
///
/// Its expectation over the model's samples is the score of the model's law itself, so an
/// ensemble of few samples is not penalised for its size (Ferro 2014, "fair" scores). In one
/// dimension it is the CRPS. Lower is better; a point prediction (all samples equal) scores
/// its distance to `y`.
///
/// # Errors
/// Fewer than 2 samples, rows of other widths than `observation`, non-finite values.
pub fn energy_score(samples: &[Vec<f32>], observation: &[f32]) -> Result<f64, ScoreError> {
    check_rows("observation", &[observation.to_vec()], 1, None)?;
    check_rows("samples", samples, 2, Some(observation.len()))?;
    let accuracy = samples
        .iter()
        .map(|x| distance(x, observation))
        .sum::<f64>()
        / samples.len() as f64;
    Ok(accuracy - 0.5 * mean_within(samples, distance))
}

/// The (squared) energy distance between two sample sets, with U-statistics inside each set:
///
/// `D = 2·(1/(m n)) Σᵢⱼ ‖Xᵢ − Yⱼ‖ − 1/(m(m−1)) Σ_{i≠i′} ‖Xᵢ − Xᵢ′‖ − 1/(n(n−1)) Σ_{j≠j′} ‖Yⱼ − Yⱼ′‖`.
///
/// An unbiased estimate of `2E‖X−Y‖ − E‖X−X′‖ − E‖Y−Y′‖`, which is 0 exactly when the laws are
/// equal; the estimate can be slightly negative then. Symmetric in its arguments.
///
/// # Errors
/// Fewer than 2 rows in a set, rows of different widths, non-finite values.
pub fn energy_distance(first: &[Vec<f32>], second: &[Vec<f32>]) -> Result<f64, ScoreError> {
    let width = check_rows("first", first, 2, None)?;
    check_rows("second", second, 2, Some(width))?;
    Ok(2.0 * mean_between(first, second, distance)
        - mean_within(first, distance)
        - mean_within(second, distance))
}

/// The median heuristic: the median of the Euclidean distances between all unordered pairs
/// of rows of the pooled sample `first ∪ second` (the mean of the two middle values for an
/// even count). When that median is 0 (more than half the pairs coincide) it is the mean of
/// the non-zero distances instead, and 1 when every row is the same point (then every RBF
/// bandwidth gives an MMD of 0).
///
/// # Errors
/// As [`energy_distance`].
pub fn median_heuristic_bandwidth(
    first: &[Vec<f32>],
    second: &[Vec<f32>],
) -> Result<f64, ScoreError> {
    let width = check_rows("first", first, 2, None)?;
    check_rows("second", second, 2, Some(width))?;
    let pooled: Vec<&Vec<f32>> = first.iter().chain(second).collect();
    let mut distances: Vec<f64> = Vec::with_capacity(pooled.len() * (pooled.len() - 1) / 2);
    for i in 0..pooled.len() {
        for j in i + 1..pooled.len() {
            distances.push(distance(pooled[i], pooled[j]));
        }
    }
    distances.sort_by(f64::total_cmp);
    let k = distances.len();
    let median = if k % 2 == 1 {
        distances[k / 2]
    } else {
        0.5 * (distances[k / 2 - 1] + distances[k / 2])
    };
    if median > 0.0 {
        return Ok(median);
    }
    let non_zero: Vec<f64> = distances.into_iter().filter(|&d| d > 0.0).collect();
    Ok(if non_zero.is_empty() {
        1.0
    } else {
        non_zero.iter().sum::<f64>() / non_zero.len() as f64
    })
}

/// The unbiased squared MMD (Gretton et al. 2012, eq. 3) with the RBF kernel
/// `k(a, b) = exp(−‖a − b‖² / (2 h²))`, `h = bandwidth`:
///
/// `MMD²_u = 1/(m(m−1)) Σ_{i≠i′} k(xᵢ, xᵢ′) + 1/(n(n−1)) Σ_{j≠j′} k(yⱼ, yⱼ′) − 2/(m n) Σᵢⱼ k(xᵢ, yⱼ)`.
///
/// Unbiased for the population `MMD²`, so it can be slightly negative when the laws are equal.
///
/// # Errors
/// As [`energy_distance`], and a bandwidth that is not finite and positive.
pub fn mmd2_unbiased(
    first: &[Vec<f32>],
    second: &[Vec<f32>],
    bandwidth: f64,
) -> Result<f64, ScoreError> {
    let width = check_rows("first", first, 2, None)?;
    check_rows("second", second, 2, Some(width))?;
    if !(bandwidth.is_finite() && bandwidth > 0.0) {
        return Err(ScoreError::InvalidParameter {
            name: "bandwidth",
            range: "a positive number",
            value: bandwidth,
        });
    }
    let scale = 1.0 / (2.0 * bandwidth * bandwidth);
    let kernel = |a: &[f32], b: &[f32]| (-squared_distance(a, b) * scale).exp();
    Ok(mean_within(first, kernel) + mean_within(second, kernel)
        - 2.0 * mean_between(first, second, kernel))
}

/// [`mmd2_unbiased`] with the bandwidth of [`median_heuristic_bandwidth`] on the pooled
/// sample; returns `(MMD²_u, bandwidth)`.
///
/// # Errors
/// As [`energy_distance`].
pub fn mmd2_median_heuristic(
    first: &[Vec<f32>],
    second: &[Vec<f32>],
) -> Result<(f64, f64), ScoreError> {
    let bandwidth = median_heuristic_bandwidth(first, second)?;
    Ok((mmd2_unbiased(first, second, bandwidth)?, bandwidth))
}

/// How the model's samples spread over the true law's known modes; see [`mode_coverage`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModeCoverage {
    /// Fraction of the modes that are covered (each mode counts once).
    pub coverage: f64,
    /// Total true weight of the covered modes (a model that misses only a rare mode still
    /// scores close to 1).
    pub weighted_coverage: f64,
    /// Per mode, in the order given: the fraction of samples assigned to it.
    pub mode_fractions: Vec<f64>,
    /// Fraction of samples within `radius` of no mode.
    pub outside_fraction: f64,
}

/// Mode coverage of `samples` (from the model, at one `(s, a)`) over the true law's `modes`
/// (e.g. [`StochasticTransition::modes`]), with this definition:
///
/// 1. each sample is assigned to the nearest mode centre (Euclidean; the first one on a tie)
///    if it lies within `radius` of it, and to no mode otherwise;
/// 2. a mode is *covered* when the fraction of all samples assigned to it is at least
///    `min_fraction`;
/// 3. `coverage` is the number of covered modes over the number of modes, and
///    `weighted_coverage` the sum of the covered modes' true weights.
///
/// A model that puts all its samples on the most likely mode of the kicked pendulum (weights
/// ½, ¼, ¼) has coverage 1/3 and weighted coverage ½; one that averages the modes into their
/// mean may cover none.
///
/// # Errors
/// No sample or no mode, widths that differ, non-finite values, `radius` not finite and
/// positive, `min_fraction` outside `(0, 1]`.
pub fn mode_coverage(
    samples: &[Vec<f32>],
    modes: &[Mode],
    radius: f64,
    min_fraction: f64,
) -> Result<ModeCoverage, ScoreError> {
    let centers: Vec<Vec<f32>> = modes.iter().map(|mode| mode.center.clone()).collect();
    let width = check_rows("modes", &centers, 1, None)?;
    check_rows("samples", samples, 1, Some(width))?;
    if !(radius.is_finite() && radius > 0.0) {
        return Err(ScoreError::InvalidParameter {
            name: "radius",
            range: "a positive number",
            value: radius,
        });
    }
    if !(min_fraction > 0.0 && min_fraction <= 1.0) {
        return Err(ScoreError::InvalidParameter {
            name: "min_fraction",
            range: "in (0, 1]",
            value: min_fraction,
        });
    }
    let mut counts = vec![0usize; modes.len()];
    let mut outside = 0usize;
    for sample in samples {
        let (nearest, nearest_distance) = centers
            .iter()
            .map(|center| distance(sample, center))
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |best, (i, d)| {
                    if d < best.1 { (i, d) } else { best }
                },
            );
        if nearest_distance <= radius {
            counts[nearest] += 1;
        } else {
            outside += 1;
        }
    }
    let n = samples.len() as f64;
    let mode_fractions: Vec<f64> = counts.iter().map(|&c| c as f64 / n).collect();
    let covered: Vec<bool> = mode_fractions.iter().map(|&f| f >= min_fraction).collect();
    Ok(ModeCoverage {
        coverage: covered.iter().filter(|&&c| c).count() as f64 / modes.len() as f64,
        weighted_coverage: modes
            .iter()
            .zip(&covered)
            .filter(|(_, c)| **c)
            .map(|(mode, _)| mode.weight)
            .sum(),
        mode_fractions,
        outside_fraction: outside as f64 / n,
    })
}

/// A Monte Carlo estimate with its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonteCarloEstimate {
    /// The sample mean.
    pub mean: f64,
    /// `sqrt(sample variance / n)`.
    pub standard_error: f64,
    /// Number of draws.
    pub n: usize,
}

/// The NLL floor at `(obs, action)`: the entropy `H = −E[log p(s′ | s, a)]` of the true law,
/// estimated from `n >= 2` draws `s′ ~ p(· | s, a)` of `transition` as the mean of
/// `−log p(s′ | s, a)`. It is the expected NLL of the true model, which no model's expected
/// NLL can go below (Gibbs' inequality), in nats for the whole observation (divide by the
/// width for nats per dimension), in the units of the raw observation: for an NLL measured on
/// normalised observations `(x − μ)/σ`, subtract `Σ_d ln σ_d` from this floor.
///
/// Returns `Ok(None)` where the law has no density ([`StochasticTransition::log_density`]
/// returns `None`: atoms, or samples on a lower-dimensional set; the floor is then −∞).
///
/// # Errors
/// `n < 2`, and the environment's errors (wrong widths, invalid action).
pub fn nll_floor(
    transition: &dyn StochasticTransition,
    obs: &[f32],
    action: &Action,
    n: usize,
    rng: &mut dyn RngCore,
) -> Result<Option<MonteCarloEstimate>, ScoreError> {
    if n < 2 {
        return Err(ScoreError::TooFewSamples {
            what: "nll_floor draws",
            needed: 2,
            got: n,
        });
    }
    let mut negative_logs = Vec::with_capacity(n);
    for _ in 0..n {
        let next = transition.sample_next(obs, action, rng)?;
        match transition.log_density(obs, action, &next)? {
            Some(log_density) => negative_logs.push(-log_density),
            None => return Ok(None),
        }
    }
    let mean = negative_logs.iter().sum::<f64>() / n as f64;
    let variance = negative_logs
        .iter()
        .map(|v| (v - mean).powi(2))
        .sum::<f64>()
        / (n - 1) as f64;
    Ok(Some(MonteCarloEstimate {
        mean,
        standard_error: (variance / n as f64).sqrt(),
        n,
    }))
}

#[cfg(test)]
mod tests {
    //! Reference values come from this pure-Python script (no NumPy needed), run with
    //! Python 3.12; its output is pasted beside each expected value:
    //!
    //! ```python
    //! import math
    //! def dist(a, b): return math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b)))
    //! X = [[0.0, 0.0], [1.0, 0.5], [-0.5, 2.0], [2.0, -1.0]]
    //! Y = [[3.0, 3.0], [4.0, 2.5], [5.0, 4.0]]
    //! y = [1.0, 1.0]
    //! S = len(X)
    //! es = sum(dist(x, y) for x in X) / S - 0.5 * sum(dist(a, b) for i, a in enumerate(X)
    //!      for j, b in enumerate(X) if i != j) / (S * (S - 1))
    //! print("energy_score", repr(es))                    # 0.38452466120926343
    //! m, n = len(X), len(Y)
    //! exy = sum(dist(a, b) for a in X for b in Y) / (m * n)
    //! exx = sum(dist(a, b) for i, a in enumerate(X) for j, b in enumerate(X) if i != j) / (m * (m - 1))
    //! eyy = sum(dist(a, b) for i, a in enumerate(Y) for j, b in enumerate(Y) if i != j) / (n * (n - 1))
    //! print("energy_distance", repr(2 * exy - exx - eyy))  # 5.321932474757058
    //! Z = X + Y
    //! d = sorted(dist(Z[i], Z[j]) for i in range(len(Z)) for j in range(i + 1, len(Z)))
    //! k = len(d)
    //! med = d[k // 2] if k % 2 else 0.5 * (d[k // 2 - 1] + d[k // 2])
    //! print("pairs", k, "median", repr(med))             # 21 3.640054944640259
    //! ker = lambda a, b: math.exp(-dist(a, b) ** 2 / (2 * med * med))
    //! kxx = sum(ker(a, b) for i, a in enumerate(X) for j, b in enumerate(X) if i != j) / (m * (m - 1))
    //! kyy = sum(ker(a, b) for i, a in enumerate(Y) for j, b in enumerate(Y) if i != j) / (n * (n - 1))
    //! kxy = sum(ker(a, b) for a in X for b in Y) / (m * n)
    //! print("mmd2_unbiased", repr(kxx + kyy - 2 * kxy))  # 0.7970608956403562
    //! ```

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use wm_envs::{BimodalWalk, BimodalWalkParams, Env, KickedPendulum};

    use super::*;

    fn x_set() -> Vec<Vec<f32>> {
        vec![
            vec![0.0, 0.0],
            vec![1.0, 0.5],
            vec![-0.5, 2.0],
            vec![2.0, -1.0],
        ]
    }

    fn y_set() -> Vec<Vec<f32>> {
        vec![vec![3.0, 3.0], vec![4.0, 2.5], vec![5.0, 4.0]]
    }

    #[test]
    fn energy_score_matches_the_reference_script() {
        let score = energy_score(&x_set(), &[1.0, 1.0]).expect("valid");
        assert!((score - 0.384_524_661_209_263_43).abs() < 1e-12, "{score}");
    }

    #[test]
    fn energy_score_matches_hand_values_in_one_dimension() {
        // Samples {0, 1, 3} at y = 1: mean |X − y| = (1 + 0 + 2)/3 = 1; the ordered pairs
        // i ≠ j have |X − X′| summing to 2·(1 + 3 + 2) = 12, over S(S−1) = 6 gives 2;
        // ES = 1 − ½·2 = 0.
        let samples = vec![vec![0.0], vec![1.0], vec![3.0]];
        assert!(energy_score(&samples, &[1.0]).expect("valid").abs() < 1e-12);
        // A point prediction scores its distance: samples all at (3, 4), y = 0 → 5.
        let point = vec![vec![3.0, 4.0]; 5];
        assert!((energy_score(&point, &[0.0, 0.0]).expect("valid") - 5.0).abs() < 1e-12);
    }

    #[test]
    fn energy_distance_matches_the_reference_script_and_hand_values() {
        let d = energy_distance(&x_set(), &y_set()).expect("valid");
        assert!((d - 5.321_932_474_757_058).abs() < 1e-12, "{d}");
        let back = energy_distance(&y_set(), &x_set()).expect("valid");
        assert!((d - back).abs() < 1e-12, "symmetric");
        // {0, 1} against {2, 4}: E|X − Y| = (2 + 4 + 1 + 3)/4 = 2.5, E|X − X′| = 1,
        // E|Y − Y′| = 2, so D = 5 − 1 − 2 = 2.
        let first = vec![vec![0.0], vec![1.0]];
        let second = vec![vec![2.0], vec![4.0]];
        assert!((energy_distance(&first, &second).expect("valid") - 2.0).abs() < 1e-12);
    }

    #[test]
    fn mmd_with_the_median_heuristic_matches_the_reference_script() {
        let (mmd2, bandwidth) = mmd2_median_heuristic(&x_set(), &y_set()).expect("valid");
        assert!(
            (bandwidth - 3.640_054_944_640_259).abs() < 1e-12,
            "{bandwidth}"
        );
        assert!((mmd2 - 0.797_060_895_640_356_2).abs() < 1e-12, "{mmd2}");
    }

    #[test]
    fn mmd_of_one_dimensional_pairs_matches_hand_values() {
        // x = {0, 1}, y = {0, 1}, h = 1: k(0, 1) = e^{−1/2} = 0.60653066.
        // MMD²_u = k(0,1) + k(0,1) − 2·(1 + 1 + 2e^{−1/2})/4 = 2e^{−1/2} − 1 − e^{−1/2}
        //        = e^{−1/2} − 1 = −0.39346934 (negative: unbiased, not a squared norm).
        let set = vec![vec![0.0], vec![1.0]];
        let mmd2 = mmd2_unbiased(&set, &set, 1.0).expect("valid");
        assert!((mmd2 - ((-0.5f64).exp() - 1.0)).abs() < 1e-12, "{mmd2}");
        // Identical points everywhere: the bandwidth falls back to 1 and the MMD is 0.
        let same = vec![vec![2.0, 2.0]; 3];
        assert_eq!(median_heuristic_bandwidth(&same, &same), Ok(1.0));
        assert_eq!(mmd2_median_heuristic(&same, &same), Ok((0.0, 1.0)));
    }

    #[test]
    fn mode_coverage_counts_samples_near_each_mode() {
        let modes = vec![
            Mode {
                center: vec![0.0],
                weight: 0.5,
            },
            Mode {
                center: vec![1.0],
                weight: 0.25,
            },
            Mode {
                center: vec![-1.0],
                weight: 0.25,
            },
        ];
        // 10 samples: 6 near 0, 3 near 1, 1 far from every mode (at 5); none near −1.
        let mut samples = vec![vec![0.05]; 6];
        samples.extend(vec![vec![0.9]; 3]);
        samples.push(vec![5.0]);
        let coverage = mode_coverage(&samples, &modes, 0.2, 0.1).expect("valid");
        assert_eq!(coverage.mode_fractions, vec![0.6, 0.3, 0.0]);
        assert_eq!(coverage.outside_fraction, 0.1);
        assert!((coverage.coverage - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(coverage.weighted_coverage, 0.75);
        // With a threshold of 0.4 only the first mode counts.
        let strict = mode_coverage(&samples, &modes, 0.2, 0.4).expect("valid");
        assert!((strict.coverage - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(strict.weighted_coverage, 0.5);
        // A sample halfway between two modes within both radii goes to the first (tie).
        let tie = mode_coverage(&[vec![0.5]], &modes, 0.6, 1.0).expect("valid");
        assert_eq!(tie.mode_fractions, vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn nll_floor_of_the_bimodal_walk_is_its_analytic_entropy() {
        // With δ = 1 ≫ σ = 0.1 the two Gaussian modes do not overlap (their overlap changes
        // the entropy by less than 1e-20), so H = ln 2 + ½ ln(2πe σ²)
        // = 0.693147 + ½ ln(0.1707955) = 0.693147 − 0.883646 = −0.190499 nats.
        let env = BimodalWalk::new();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let estimate = nll_floor(
            &env,
            &[0.3],
            &Action::Continuous(vec![0.2]),
            20_000,
            &mut rng,
        )
        .expect("valid")
        .expect("has a density");
        let entropy =
            2f64.ln() + 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * 0.01).ln();
        assert!((entropy + 0.190_499).abs() < 1e-6, "{entropy}");
        assert!(
            (estimate.mean - entropy).abs() < 4.0 * estimate.standard_error,
            "{estimate:?} vs {entropy}"
        );
        // No density: atoms.
        let atoms = BimodalWalk::with_params(BimodalWalkParams {
            offset: 1.0,
            noise_std: 0.0,
        })
        .expect("valid");
        assert_eq!(
            nll_floor(&atoms, &[0.0], &Action::Continuous(vec![0.0]), 10, &mut rng),
            Ok(None)
        );
        let mut pendulum = KickedPendulum::new();
        let obs = pendulum.reset(Some(0));
        assert_eq!(
            nll_floor(
                &pendulum,
                &obs,
                &Action::Continuous(vec![0.0]),
                10,
                &mut rng
            ),
            Ok(None)
        );
    }

    #[test]
    fn energy_score_prefers_the_bimodal_truth_to_a_gaussian_of_the_same_moments() {
        // The point of sample-based scores: on the bimodal walk (s′ = s + a ± 1 + 0.1ε), the
        // true sampler must beat a Gaussian with the same mean and variance (1.01), and mode
        // coverage must tell them apart. 500 observations, 32 samples each, fixed seeds.
        let env = BimodalWalk::new();
        // Box-Muller: sqrt(−2 ln u₁)·cos(2π u₂) is standard normal for u₁ ∈ (0, 1].
        let gaussian = |rng: &mut ChaCha8Rng| {
            let (u1, u2) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
            1.01f64.sqrt() * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let action = Action::Continuous(vec![0.0]);
        let (mut truth_score, mut gaussian_score) = (0.0, 0.0);
        let (mut truth_coverage, mut gaussian_coverage) = (0.0, 0.0);
        let n_obs = 500;
        for _ in 0..n_obs {
            let observed = env.sample_next(&[0.0], &action, &mut rng).expect("valid");
            let truth: Vec<Vec<f32>> = (0..32)
                .map(|_| env.sample_next(&[0.0], &action, &mut rng).expect("valid"))
                .collect();
            let model: Vec<Vec<f32>> = (0..32).map(|_| vec![gaussian(&mut rng) as f32]).collect();
            truth_score += energy_score(&truth, &observed).expect("valid") / n_obs as f64;
            gaussian_score += energy_score(&model, &observed).expect("valid") / n_obs as f64;
            let modes = env.modes(&[0.0], &action).expect("valid");
            truth_coverage += mode_coverage(&truth, &modes, 0.3, 0.2)
                .expect("valid")
                .coverage
                / n_obs as f64;
            gaussian_coverage += mode_coverage(&model, &modes, 0.3, 0.2)
                .expect("valid")
                .coverage
                / n_obs as f64;
        }
        // Expected scores, by hand: the true law's CRPS at its own draws is ½E|X − X′|
        // = ½(½·2 + ½·0.1·√2·√(2/π)) ≈ 0.53; the Gaussian N(0, 1.005²) at y ≈ ±1 scores
        // σ(z(2Φ(z) − 1) + 2φ(z) − 1/√π) ≈ 0.60. The margin 0.02 is several standard errors.
        assert!(
            truth_score + 0.02 < gaussian_score,
            "truth {truth_score} vs gaussian {gaussian_score}"
        );
        assert!(truth_coverage > 0.95, "{truth_coverage}");
        assert!(
            gaussian_coverage < truth_coverage - 0.2,
            "{gaussian_coverage}"
        );
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        assert_eq!(
            energy_score(&[vec![1.0]], &[0.0]),
            Err(ScoreError::TooFewSamples {
                what: "samples",
                needed: 2,
                got: 1
            })
        );
        assert!(matches!(
            energy_score(&[vec![1.0], vec![1.0, 2.0]], &[0.0]),
            Err(ScoreError::WidthMismatch { row: 1, .. })
        ));
        assert!(matches!(
            energy_distance(&[vec![f32::NAN], vec![0.0]], &[vec![0.0], vec![1.0]]),
            Err(ScoreError::NonFinite {
                what: "first",
                row: 0
            })
        ));
        let error = mmd2_unbiased(&[vec![0.0], vec![1.0]], &[vec![0.0], vec![1.0]], 0.0)
            .expect_err("zero bandwidth");
        assert_eq!(
            error.to_string(),
            "`bandwidth` must be a positive number, got 0"
        );
        let modes = [Mode {
            center: vec![0.0],
            weight: 1.0,
        }];
        assert!(mode_coverage(&[vec![0.0]], &modes, -1.0, 0.5).is_err());
        assert!(mode_coverage(&[vec![0.0]], &modes, 1.0, 0.0).is_err());
        assert!(mode_coverage(&[], &modes, 1.0, 0.5).is_err());
        assert!(mode_coverage(&[vec![0.0]], &[], 1.0, 0.5).is_err());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(matches!(
            nll_floor(
                &BimodalWalk::new(),
                &[0.0, 1.0],
                &Action::Continuous(vec![0.0]),
                10,
                &mut rng
            ),
            Err(ScoreError::Env(_))
        ));
    }
}
