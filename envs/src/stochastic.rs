//! Environments whose transitions are random by design, and the interface that exposes their
//! true transition distribution: [`StochasticTransition`].
//!
//! Each stochastic environment draws its transition noise from its own random stream (ChaCha8,
//! seeded from the `reset` seed), apart from the reset stream, so that an episode is
//! reproducible from `reset(Some(seed))` and the same action sequence. The trait gives the
//! same distribution without an episode: a sampler that draws `s' ~ p(· | s, a)` from an
//! observation and an action with a caller's random generator, the density `p(s' | s, a)`
//! where one exists, and the modes of `p(· | s, a)` where they are known, for mode coverage.
//!
//! The module also holds the Kolmogorov-Smirnov statistic and its asymptotic critical value,
//! which the tests of every sampler use to compare it with its analytic distribution.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::EnvError;
use crate::space::Action;

/// One mode of a transition distribution: a point in observation space and the probability
/// mass that belongs to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Mode {
    /// The mode's centre, an observation (for an atom: the atom itself; for a continuous
    /// component: its mean).
    pub center: Vec<f32>,
    /// Probability of the mode; the weights of [`StochasticTransition::modes`] sum to 1.
    pub weight: f64,
}

/// The true transition distribution `p(s' | s, a)` of an environment, in observation space.
///
/// Observations and actions are those of the environment's [`Env`](crate::Env) (an
/// observation of `observation_space().width()` values, an action from `action_space()`;
/// continuous actions are clipped to the action box as `step` does). The sampler and `step`
/// follow the same law: `step` is `sample_next` from the current state with the environment's
/// own noise stream (from the internal `f64` state rather than its `f32` observation).
pub trait StochasticTransition: Send + Sync {
    /// Draws one next observation `s' ~ p(· | obs, action)` with `rng`.
    ///
    /// # Errors
    /// [`EnvError::InvalidAction`] for an action outside the action space (wrong variant,
    /// width or NaN), [`EnvError::InvalidObservation`] for an observation of the wrong width.
    fn sample_next(
        &self,
        obs: &[f32],
        action: &Action,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<f32>, EnvError>;

    /// `log p(next_obs | obs, action)` (natural log, with respect to Lebesgue measure on the
    /// observation space) where the distribution has a density; `None` where it has none
    /// (atoms, or samples confined to a lower-dimensional set).
    ///
    /// # Errors
    /// As [`sample_next`](Self::sample_next), and for a `next_obs` of the wrong width.
    fn log_density(
        &self,
        obs: &[f32],
        action: &Action,
        next_obs: &[f32],
    ) -> Result<Option<f64>, EnvError>;

    /// The modes of `p(· | obs, action)` with their weights (summing to 1). Modes whose
    /// centres coincide (e.g. at a clip bound) are merged.
    ///
    /// # Errors
    /// As [`sample_next`](Self::sample_next).
    fn modes(&self, obs: &[f32], action: &Action) -> Result<Vec<Mode>, EnvError>;
}

/// The random stream of transition noise: ChaCha8 seeded from the `reset` seed.
#[derive(Clone, Debug, Default)]
pub(crate) struct NoiseRng {
    generator: Option<ChaCha8Rng>,
}

impl NoiseRng {
    /// `Some(seed)` reseeds; `None` continues the stream, or seeds from operating-system
    /// entropy when there is none yet (like the reset stream).
    pub(crate) fn reseed(&mut self, seed: Option<u64>) {
        if let Some(seed) = seed {
            self.generator = Some(ChaCha8Rng::seed_from_u64(seed));
        } else if self.generator.is_none() {
            self.generator = Some(ChaCha8Rng::seed_from_u64(rand::random::<u64>()));
        }
    }

    /// The stream; seeded from entropy if `reseed` was never called.
    pub(crate) fn generator(&mut self) -> &mut ChaCha8Rng {
        self.generator
            .get_or_insert_with(|| ChaCha8Rng::seed_from_u64(rand::random::<u64>()))
    }
}

/// Checks that `obs` has `width` values.
pub(crate) fn check_width(env_id: &str, obs: &[f32], width: usize) -> Result<(), EnvError> {
    if obs.len() == width {
        Ok(())
    } else {
        Err(EnvError::InvalidObservation {
            env_id: env_id.to_string(),
            expected: width,
            got: obs.len(),
        })
    }
}

/// Checks that a parameter is finite and inside `range` (given in words), or names it.
pub(crate) fn check_parameter(
    env_id: &str,
    field: &'static str,
    value: f64,
    ok: bool,
    range: &str,
) -> Result<(), EnvError> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(EnvError::InvalidParameter {
            env_id: env_id.to_string(),
            field,
            message: format!("must be {range}, got {value}"),
        })
    }
}

/// The standard normal CDF `Φ(x) = erfc(-x/√2)/2`.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The complementary error function, to a relative error below 1.2e-7 everywhere
/// (Chebyshev fit of Numerical Recipes' `erfcc`, 2nd ed., section 6.2).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let result = t * poly.exp();
    if x >= 0.0 { result } else { 2.0 - result }
}

/// The one-sample Kolmogorov-Smirnov statistic `D = sup_x |F_n(x) - F(x)|` of `samples`
/// against the CDF `cdf` (exact for the empirical step function: the supremum is taken on
/// both sides of every jump). `samples` must not be empty.
pub fn ks_statistic_one_sample(samples: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mut distance = 0.0f64;
    for (i, &x) in sorted.iter().enumerate() {
        let f = cdf(x);
        distance = distance.max((i + 1) as f64 / n - f).max(f - i as f64 / n);
    }
    distance
}

/// The two-sample Kolmogorov-Smirnov statistic `D = sup_x |F_n(x) - G_m(x)|` between two
/// empirical CDFs (ties handled by stepping past every equal value at once).
pub fn ks_statistic_two_sample(first: &[f64], second: &[f64]) -> f64 {
    let mut a = first.to_vec();
    let mut b = second.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut distance) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        distance = distance.max((i as f64 / n - j as f64 / m).abs());
    }
    distance
}

/// The asymptotic Kolmogorov-Smirnov coefficient `c(α) = sqrt(-ln(α/2) / 2)`: the statistic
/// exceeds `c(α)·sqrt((n+m)/(n·m))` (two samples) or `c(α)/sqrt(n)` (one sample) with
/// probability about `α` when the distributions are equal. `c(0.05) = 1.358`, `c(0.01) = 1.628`.
pub fn ks_coefficient(alpha: f64) -> f64 {
    (-(alpha / 2.0).ln() / 2.0).sqrt()
}

/// The two-sample critical value `c(α)·sqrt((n+m)/(n·m))`.
pub fn ks_critical_two_sample(alpha: f64, n: usize, m: usize) -> f64 {
    let (n, m) = (n as f64, m as f64);
    ks_coefficient(alpha) * ((n + m) / (n * m)).sqrt()
}

/// The one-sample critical value `c(α)/sqrt(n)`.
pub fn ks_critical_one_sample(alpha: f64, n: usize) -> f64 {
    ks_coefficient(alpha) / (n as f64).sqrt()
}

/// Test helpers shared by the stochastic environments' tests.
#[cfg(test)]
pub(crate) mod test_support {
    /// Mean and unbiased variance.
    pub(crate) fn mean_variance(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, variance)
    }

    /// Asserts that a sample mean is within 4 standard errors (`sqrt(variance/n)`) of `mean`:
    /// a false failure has probability about 6e-5 (and none with the tests' fixed seeds).
    pub(crate) fn assert_mean_close(name: &str, values: &[f64], mean: f64, variance: f64) {
        let (sample_mean, _) = mean_variance(values);
        let tolerance = 4.0 * (variance / values.len() as f64).sqrt();
        assert!(
            (sample_mean - mean).abs() <= tolerance,
            "{name}: sample mean {sample_mean} vs {mean} (tolerance {tolerance}, n = {})",
            values.len()
        );
    }

    /// Asserts that a sample variance is within 4 standard errors of `variance`, where the
    /// standard error of the unbiased variance is `sqrt((μ4 - σ⁴(n-3)/(n-1))/n)` with the
    /// distribution's fourth central moment `fourth_moment`.
    pub(crate) fn assert_variance_close(
        name: &str,
        values: &[f64],
        variance: f64,
        fourth_moment: f64,
    ) {
        let (_, sample_variance) = mean_variance(values);
        let n = values.len() as f64;
        let standard_error =
            ((fourth_moment - variance * variance * (n - 3.0) / (n - 1.0)) / n).sqrt();
        let tolerance = 4.0 * standard_error;
        assert!(
            (sample_variance - variance).abs() <= tolerance,
            "{name}: sample variance {sample_variance} vs {variance} (tolerance {tolerance}, n = {n})"
        );
    }

    /// Asserts that a count of `hits` in `n` trials is within 4 binomial standard errors of
    /// probability `p`.
    pub(crate) fn assert_fraction_close(name: &str, hits: usize, n: usize, p: f64) {
        let fraction = hits as f64 / n as f64;
        let tolerance = 4.0 * (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (fraction - p).abs() <= tolerance,
            "{name}: fraction {fraction} vs {p} (tolerance {tolerance}, n = {n})"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_matches_tabulated_values() {
        // Φ(0) = 0.5, Φ(1) = 0.8413447461, Φ(-1.959963985) = 0.025, Φ(3) = 0.9986501020.
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.0) - 0.841_344_746_1).abs() < 1e-7);
        assert!((normal_cdf(-1.959_963_985) - 0.025).abs() < 1e-7);
        assert!((normal_cdf(3.0) - 0.998_650_102).abs() < 1e-7);
    }

    #[test]
    fn ks_coefficient_matches_the_usual_table() {
        // sqrt(-ln(0.025)/2) = 1.35810, sqrt(-ln(0.005)/2) = 1.62762.
        assert!((ks_coefficient(0.05) - 1.358_10).abs() < 1e-5);
        assert!((ks_coefficient(0.01) - 1.627_62).abs() < 1e-5);
        assert!((ks_critical_two_sample(0.05, 100, 100) - 1.358_10 * 0.02f64.sqrt()).abs() < 1e-5);
        assert!((ks_critical_one_sample(0.01, 400) - 1.627_62 / 20.0).abs() < 1e-5);
    }

    #[test]
    fn ks_statistics_match_hand_computed_values() {
        // Samples {0.1, 0.4, 0.7} against U(0, 1): the ECDF after each point is 1/3, 2/3, 1, so
        // the gaps are max(1/3-0.1, 0.1-0, 2/3-0.4, 0.4-1/3, 1-0.7, 0.7-2/3) = 0.3.
        let one = ks_statistic_one_sample(&[0.7, 0.1, 0.4], |x| x.clamp(0.0, 1.0));
        assert!((one - 0.3).abs() < 1e-12, "{one}");
        // {1, 2, 3} against {2.5, 3.5}: after 2, F = 2/3 and G = 0, the largest gap.
        let two = ks_statistic_two_sample(&[1.0, 2.0, 3.0], &[2.5, 3.5]);
        assert!((two - 2.0 / 3.0).abs() < 1e-12, "{two}");
        // Ties step together: equal samples give 0.
        assert_eq!(
            ks_statistic_two_sample(&[1.0, 1.0, 2.0], &[1.0, 2.0, 1.0]),
            0.0
        );
    }
}
