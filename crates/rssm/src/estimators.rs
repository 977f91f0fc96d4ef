//! Gradient estimators for a categorical latent, on a problem small enough to enumerate.
//!
//! The gradient is `d/dθ E_{z ~ Cat(softmax θ)}[f(z)]` for one categorical of `K` classes and a
//! fixed `f` ([`SquaredError`]: `f(z) = (z·v - t)^2`, defined on all of `R^K` so that relaxed
//! samples have a value too). Its exact value is the gradient of the enumerated sum
//! `Σ_k p_k f(e_k)` ([`exact_gradient`]); every estimator draws `n` independent estimates
//! ([`draw_estimates`]) whose mean, variance and bias [`EstimateStats`] reports.
//!
//! The estimators are the real code paths: the pathwise ones sample through
//! [`LatentConfig::sample`] with the RSSM's [`CategoricalEstimator`]s, REINFORCE builds the
//! score-function surrogate `Σ_j (f(z_j) - b_j) ln p(z_j)` and differentiates it with burn's
//! autodiff. The `n` estimates are computed at once: `θ` is a `[n, K]` leaf whose rows are
//! equal, and the gradient of row `i` is estimate `i`, since the rows never mix.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use crate::latent::{CategoricalEstimator, LatentConfig, LatentDist, one_hot_argmax};
use wm_models::InvalidField;

/// The baseline `b` subtracted from `f(z)` in the REINFORCE surrogate `(f(z) - b) ln p(z)`.
/// A baseline independent of `z` keeps the estimator unbiased (`E[∇ ln p(z)] = 0`) and
/// lowers its variance when it is near `E[f]`.
#[derive(Clone, Debug, PartialEq)]
pub enum Baseline {
    /// `b = 0`.
    None,
    /// `b_i` = the exponential moving average, with `decay`, of the mean `f` of the estimates
    /// before estimate `i`, bias-corrected as Adam's moments (`m_i / (1 - decay^i)`); `b_0 = 0`.
    /// It uses only earlier samples, so it is independent of estimate `i`'s.
    MovingAverage {
        /// The average's decay, in `[0, 1)`.
        decay: f64,
    },
    /// With `k >= 2` samples per estimate, sample `j`'s baseline is the mean of the other
    /// `k - 1` samples' `f`: VIMCO's leave-one-out baseline (Mnih & Rezende 2016) as it reads
    /// for a plain expectation `E[f]` (Kool et al. 2019's "REINFORCE leave-one-out"); VIMCO's
    /// geometric-mean form belongs to the multi-sample log-mean-exp bound, not to `E[f]`.
    LeaveOneOut,
}

/// An estimator of `d/dθ E[f(z)]`.
#[derive(Clone, Debug, PartialEq)]
pub enum GradientEstimator {
    /// The score-function estimator `(1/k) Σ_j (f(z_j) - b_j) ∇ ln p(z_j)`, `z_j ~ p`
    /// independent (Williams 1992): unbiased, high variance.
    Reinforce {
        /// Samples `k` per estimate, `>= 1` (`>= 2` for [`Baseline::LeaveOneOut`]).
        samples: usize,
        /// The baseline.
        baseline: Baseline,
    },
    /// One sample through [`LatentConfig::sample`] with this estimator, gradient `∇ f(z)`.
    Pathwise(CategoricalEstimator),
}

impl GradientEstimator {
    /// A short name for tables: `reinforce`, `reinforce_ma`, `reinforce_loo`, with `_k4` for
    /// four samples, `straight_through`, `gumbel_softmax_t0.5`, `st_gumbel_t0.5`.
    pub fn name(&self) -> String {
        match self {
            Self::Reinforce { samples, baseline } => {
                let base = match baseline {
                    Baseline::None => "reinforce",
                    Baseline::MovingAverage { .. } => "reinforce_ma",
                    Baseline::LeaveOneOut => "reinforce_loo",
                };
                if *samples == 1 {
                    base.to_string()
                } else {
                    format!("{base}_k{samples}")
                }
            }
            Self::Pathwise(CategoricalEstimator::StraightThrough) => "straight_through".into(),
            Self::Pathwise(CategoricalEstimator::GumbelSoftmax { temperature }) => {
                format!("gumbel_softmax_t{temperature}")
            }
            Self::Pathwise(CategoricalEstimator::StraightThroughGumbel { temperature }) => {
                format!("st_gumbel_t{temperature}")
            }
            Self::Pathwise(CategoricalEstimator::Reinforce { .. }) => "reinforce_pathwise".into(),
        }
    }

    /// The first field out of range: `samples` in `1..=4096` (`>= 2` with the leave-one-out
    /// baseline), `baseline.decay` in `[0, 1)`, the pathwise estimator's temperature.
    pub fn validate(&self) -> Result<(), InvalidField> {
        match self {
            Self::Reinforce { samples, baseline } => {
                wm_models::validate::count("samples", *samples, 4096)?;
                match baseline {
                    Baseline::None => {}
                    Baseline::MovingAverage { decay } => {
                        if !(0.0..1.0).contains(decay) {
                            return Err(InvalidField::new(
                                "baseline.decay",
                                format!("must be in [0, 1), got {decay}"),
                            ));
                        }
                    }
                    Baseline::LeaveOneOut => {
                        if *samples < 2 {
                            return Err(InvalidField::new(
                                "samples",
                                format!(
                                    "must be at least 2 with the leave-one-out baseline, got {samples}"
                                ),
                            ));
                        }
                    }
                }
                Ok(())
            }
            Self::Pathwise(CategoricalEstimator::Reinforce { .. }) => Err(InvalidField::new(
                "estimator",
                "Reinforce is not a pathwise estimator: use GradientEstimator::Reinforce",
            )),
            Self::Pathwise(estimator) => estimator.validate(),
        }
    }
}

/// `f(z) = (z·v - target)^2`: on a one-hot `e_k` the squared error of class `k`'s value
/// `v_k`, and smooth on all of `R^K` (the pathwise estimators evaluate it off the one-hots).
#[derive(Clone, Debug, PartialEq)]
pub struct SquaredError {
    /// Class values `v`, one per class.
    pub values: Vec<f32>,
    /// The target `t`.
    pub target: f32,
}

impl SquaredError {
    /// `f` of each row.
    ///
    /// # Shapes
    /// - `z`: `[N, K]`; returns `[N]`
    pub fn value(&self, z: Tensor<2>) -> Tensor<1> {
        let [n, k] = z.dims();
        assert_eq!(
            k,
            self.values.len(),
            "z shape {:?}, expected [N, {}]",
            z.dims(),
            self.values.len()
        );
        let v = Tensor::<2>::from_data(TensorData::new(self.values.clone(), [k, 1]), &z.device());
        z.matmul(v)
            .reshape([n])
            .sub_scalar(self.target)
            .powi_scalar(2)
    }
}

/// The tiny problem: logits `θ` of one categorical and the function `f`.
#[derive(Clone, Debug, PartialEq)]
pub struct CategoricalProblem {
    /// `θ`, `K` logits: `p = softmax θ` (no uniform mix).
    pub logits: Vec<f32>,
    /// `f`.
    pub objective: SquaredError,
}

impl CategoricalProblem {
    /// The problem of the tests and of `wm bench estimators`: `K = 4`, `θ = [1, 0, -0.5, 0.5]`,
    /// `v = [0, 1, 2, 3]`, `t = 2.5`; `f(e_k) = [6.25, 2.25, 0.25, 0.25]`.
    pub fn toy() -> Self {
        Self {
            logits: vec![1.0, 0.0, -0.5, 0.5],
            objective: SquaredError {
                values: vec![0.0, 1.0, 2.0, 3.0],
                target: 2.5,
            },
        }
    }

    /// The number of classes `K`.
    pub fn classes(&self) -> usize {
        self.logits.len()
    }

    fn latent(&self, estimator: CategoricalEstimator) -> LatentConfig {
        LatentConfig::Categorical {
            groups: 1,
            classes: self.classes(),
            unimix: 0.0,
            estimator,
        }
    }

    /// A `[rows, K]` autodiff leaf whose rows are all `θ`.
    fn logit_rows(&self, rows: usize, device: &Device) -> Param<Tensor<2>> {
        let k = self.classes();
        let data: Vec<f32> = (0..rows)
            .flat_map(|_| self.logits.iter().copied())
            .collect();
        Param::from_data(TensorData::new(data, [rows, k]), device)
    }
}

/// The exact gradient `∇_θ Σ_k softmax(θ)_k f(e_k)`, by enumerating the classes and
/// differentiating with autodiff (`device` is made an autodiff device). Closed form:
/// `p_k (f_k - Σ_j p_j f_j)`.
pub fn exact_gradient(problem: &CategoricalProblem, device: &Device) -> Vec<f64> {
    let device = device.clone().autodiff();
    let k = problem.classes();
    let theta = problem.logit_rows(1, &device);
    let LatentDist::Categorical { probs } = problem
        .latent(CategoricalEstimator::StraightThrough)
        .dist(theta.val())
    else {
        unreachable!("a categorical latent gives a categorical distribution")
    };
    let all_classes = Tensor::<2>::eye(k, &device); // [K, K], row k = e_k
    let f = problem.objective.value(all_classes).reshape([1, k]);
    let expectation = (probs * f).sum();
    let grads = expectation.backward();
    to_f64(
        theta
            .val()
            .grad(&grads)
            .expect("θ takes part in the expectation"),
    )
}

/// The exact expectation of the straight-through estimate, `Σ_k p_k ∇_θ f(e_k + p - sg(p))`,
/// by enumeration with autodiff: what [`CategoricalEstimator::StraightThrough`]'s mean
/// converges to, which differs from [`exact_gradient`] unless `f` is linear.
pub fn straight_through_expectation(problem: &CategoricalProblem, device: &Device) -> Vec<f64> {
    let device = device.clone().autodiff();
    let k = problem.classes();
    let theta = problem.logit_rows(k, &device); // row c carries the sample z = e_c
    let LatentDist::Categorical { probs } = problem
        .latent(CategoricalEstimator::StraightThrough)
        .dist(theta.val())
    else {
        unreachable!("a categorical latent gives a categorical distribution")
    };
    let weight = probs
        .clone()
        .detach()
        .mul(Tensor::<2>::eye(k, &device))
        .sum_dim(1); // [K, 1] = p_c
    let z = crate::latent::straight_through(Tensor::<2>::eye(k, &device), probs);
    let f = problem.objective.value(z).reshape([k, 1]);
    let grads = (f * weight).sum().backward();
    let rows = to_f64(theta.val().grad(&grads).expect("θ takes part in f"));
    (0..k)
        .map(|j| (0..k).map(|c| rows[c * k + j]).sum())
        .collect()
}

/// `n` independent estimates of the gradient, `n x K` values row-major, from the device's
/// RNG (seed it with [`Device::seed`] for the same numbers).
pub fn draw_estimates(
    problem: &CategoricalProblem,
    estimator: &GradientEstimator,
    n: usize,
    device: &Device,
) -> Result<Vec<f64>, InvalidField> {
    estimator.validate()?;
    wm_models::validate::count("n", n, 1 << 24)?;
    let device = device.clone().autodiff();
    let k = problem.classes();
    let theta = problem.logit_rows(n, &device);
    let surrogate = match estimator {
        GradientEstimator::Pathwise(pathwise) => {
            let latent = problem.latent(pathwise.clone());
            let dist = latent.dist(theta.val());
            let z = latent.sample(&dist, Some(latent.noise(n, &device)));
            problem.objective.value(z).sum()
        }
        GradientEstimator::Reinforce { samples, baseline } => {
            let s = *samples;
            let latent = problem.latent(CategoricalEstimator::StraightThrough);
            let LatentDist::Categorical { probs } = latent.dist(theta.val()) else {
                unreachable!("a categorical latent gives a categorical distribution")
            };
            // [n, K] -> [n s, K], row i s + j = sample j of estimate i.
            let probs = probs
                .reshape([n, 1, k])
                .expand([n, s, k])
                .reshape([n * s, k]);
            let score = probs.clone().detach().log() + latent.noise(n * s, &device);
            let z = one_hot_argmax(score, 1, k); // Gumbel-max: z ~ p, untracked
            let f = to_f64(problem.objective.value(z.clone()));
            let advantage: Vec<f32> = f
                .iter()
                .zip(baselines(&f, n, s, baseline))
                .map(|(f, b)| (f - b) as f32)
                .collect();
            let advantage = Tensor::<1>::from_data(TensorData::new(advantage, [n * s]), &device);
            let log_prob = LatentDist::Categorical { probs }.log_prob(z); // [n s]
            (advantage * log_prob).sum().div_scalar(s as f64)
        }
    };
    let grads = surrogate.backward();
    Ok(to_f64(
        theta
            .val()
            .grad(&grads)
            .expect("θ takes part in the surrogate"),
    ))
}

/// The baseline of each of the `n s` samples (sample `j` of estimate `i` at `i s + j`).
fn baselines(f: &[f64], n: usize, s: usize, baseline: &Baseline) -> Vec<f64> {
    match baseline {
        Baseline::None => vec![0.0; n * s],
        Baseline::MovingAverage { decay } => {
            let mut average = 0.0;
            let mut out = Vec::with_capacity(n * s);
            for (i, estimate) in f.chunks(s).enumerate() {
                let b = if i == 0 {
                    0.0
                } else {
                    average / (1.0 - decay.powi(i as i32))
                };
                out.extend(std::iter::repeat_n(b, s));
                let mean = estimate.iter().sum::<f64>() / s as f64;
                average = decay * average + (1.0 - decay) * mean;
            }
            out
        }
        Baseline::LeaveOneOut => f
            .chunks(s)
            .flat_map(|estimate| {
                let total: f64 = estimate.iter().sum();
                estimate.iter().map(move |fj| (total - fj) / (s - 1) as f64)
            })
            .collect(),
    }
}

/// Summary statistics of `n` estimates against the exact gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct EstimateStats {
    /// The mean estimate, `K` values.
    pub mean: Vec<f64>,
    /// Each coordinate's variance (divisor `n - 1`).
    pub variance: Vec<f64>,
    /// The trace of the covariance, `Σ_k variance_k`.
    pub trace_variance: f64,
    /// `||mean - exact||`: the bias plus Monte Carlo error of order `sqrt(trace_variance / n)`.
    pub bias_norm: f64,
    /// The signal-to-noise ratio of one estimate, `||mean|| / sqrt(trace_variance)`.
    pub snr: f64,
    /// Cosine between the mean estimate and the exact gradient.
    pub cosine: f64,
    /// The number of estimates `n`.
    pub n: usize,
}

impl EstimateStats {
    /// The statistics of `estimates` (`n x K`, row-major) against `exact` (`K`).
    pub fn new(estimates: &[f64], exact: &[f64]) -> Self {
        let k = exact.len();
        assert!(
            k > 0 && estimates.len().is_multiple_of(k) && estimates.len() >= 2 * k,
            "{} estimates of {k} classes: need at least two whole rows",
            estimates.len()
        );
        let n = estimates.len() / k;
        let mut mean = vec![0.0; k];
        for row in estimates.chunks(k) {
            for (m, g) in mean.iter_mut().zip(row) {
                *m += g / n as f64;
            }
        }
        let mut variance = vec![0.0; k];
        for row in estimates.chunks(k) {
            for ((v, g), m) in variance.iter_mut().zip(row).zip(&mean) {
                *v += (g - m).powi(2) / (n - 1) as f64;
            }
        }
        let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let trace_variance: f64 = variance.iter().sum();
        let diff: Vec<f64> = mean.iter().zip(exact).map(|(m, e)| m - e).collect();
        let dot: f64 = mean.iter().zip(exact).map(|(m, e)| m * e).sum();
        Self {
            bias_norm: norm(&diff),
            snr: norm(&mean) / trace_variance.sqrt(),
            cosine: dot / (norm(&mean) * norm(exact)),
            trace_variance,
            mean,
            variance,
            n,
        }
    }

    /// The standard error of coordinate `k`'s mean, `sqrt(variance_k / n)`.
    pub fn standard_error(&self, k: usize) -> f64 {
        (self.variance[k] / self.n as f64).sqrt()
    }
}

fn to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensor")
        .into_iter()
        .map(f64::from)
        .collect()
}

#[cfg(test)]
mod tests {
    //! Reference values by enumeration in plain Python (no NumPy), for the toy problem
    //! (`θ = [1, 0, -0.5, 0.5]`, `v = [0, 1, 2, 3]`, `t = 2.5`):
    //! ```python
    //! import math, itertools
    //! th=[1.0,0.0,-0.5,0.5]; v=[0.,1.,2.,3.]; t=2.5; K=4
    //! e=[math.exp(x-max(th)) for x in th]; p=[x/sum(e) for x in e]
    //! F=[(vi-t)**2 for vi in v]; Ef=sum(a*b for a,b in zip(p,F))
    //! g=[p[q]*(F[q]-Ef) for q in range(K)]; gg=sum(x*x for x in g)          # exact gradient
    //! onehot=lambda c: [1.0 if j==c else 0.0 for j in range(K)]
    //! def tv(b): # trace variance of one-sample REINFORCE with a constant baseline b
    //!     return sum(p[c]*(F[c]-b)**2*sum((onehot(c)[j]-p[j])**2 for j in range(K))
    //!                for c in range(K))-gg
    //! def tv_k(k, loo): # trace variance of k-sample REINFORCE, all K^k outcomes
    //!     m2=0.0; mean=[0.0]*K
    //!     for combo in itertools.product(range(K), repeat=k):
    //!         w=math.prod(p[c] for c in combo); est=[0.0]*K
    //!         for c in combo:
    //!             b=(sum(F[x] for x in combo)-F[c])/(k-1) if loo else 0.0
    //!             est=[est[q]+(F[c]-b)*(onehot(c)[q]-p[q])/k for q in range(K)]
    //!         m2+=w*sum(x*x for x in est); mean=[a+w*b for a,b in zip(mean,est)]
    //!     return m2-sum(x*x for x in mean)
    //! J=[[(p[i] if i==j else 0)-p[i]*p[j] for j in range(K)] for i in range(K)]
    //! stc=[[sum(J[i][j]*2*(v[c]-t)*v[j] for j in range(K)) for i in range(K)] for c in range(K)]
    //! st=[sum(p[c]*stc[c][i] for c in range(K)) for i in range(K)]            # E[straight-through]
    //! st_var=sum(p[c]*sum(x*x for x in stc[c]) for c in range(K))-sum(x*x for x in st)
    //! ```
    //! `p = [0.455054, 0.167405, 0.101536, 0.276004]`, `f(e_k) = [6.25, 2.25, 0.25, 0.25]`,
    //! `E f = 3.315136`; exact gradient `[1.335522, -0.178309, -0.311223, -0.845991]`;
    //! REINFORCE trace variance `tv(0) = 5.542938`, with the ideal constant baseline
    //! `tv(E f) = 2.234829` (ratio 2.48, the most any constant baseline can give);
    //! `tv_k(4, False) = 1.385734`, `tv_k(4, True) = 1.210562` (ratio 1.145);
    //! straight-through mean `[1.419630, 0.086494, -0.211840, -1.294284]` (bias norm 0.536692,
    //! cosine 0.969753 with the exact gradient), trace variance 3.582203.
    use super::*;

    const EXACT: [f64; 4] = [1.335_522, -0.178_309, -0.311_223, -0.845_991];
    const N: usize = 20_000;

    fn draw(estimator: GradientEstimator, seed: u64) -> EstimateStats {
        let (_guard, device) = crate::test_util::seeded(seed);
        let problem = CategoricalProblem::toy();
        let estimates = draw_estimates(&problem, &estimator, N, &device).unwrap();
        let stats = EstimateStats::new(&estimates, &EXACT);
        eprintln!("{}: {stats:?}", estimator.name());
        stats
    }

    fn reinforce(samples: usize, baseline: Baseline) -> GradientEstimator {
        GradientEstimator::Reinforce { samples, baseline }
    }

    fn assert_within_standard_errors(stats: &EstimateStats, expected: &[f64], errors: f64) {
        for (k, e) in expected.iter().enumerate() {
            assert!(
                (stats.mean[k] - e).abs() <= errors * stats.standard_error(k),
                "coordinate {k}: mean {:?} vs {expected:?}, standard error {}",
                stats.mean,
                stats.standard_error(k)
            );
        }
    }

    fn assert_relative(actual: f64, expected: f64, tol: f64) {
        assert!(
            (actual - expected).abs() <= tol * expected.abs(),
            "{actual} vs {expected} (relative tolerance {tol})"
        );
    }

    #[test]
    fn exact_gradient_and_straight_through_expectation_match_the_enumeration() {
        let device = wm_backend::test_device();
        let problem = CategoricalProblem::toy();
        let exact = exact_gradient(&problem, &device);
        let st = straight_through_expectation(&problem, &device);
        for (a, e) in exact.iter().zip(EXACT) {
            assert!((a - e).abs() < 1e-5, "{exact:?} vs {EXACT:?}");
        }
        let st_expected = [1.419_630, 0.086_494, -0.211_840, -1.294_284];
        for (a, e) in st.iter().zip(st_expected) {
            assert!((a - e).abs() < 1e-5, "{st:?} vs {st_expected:?}");
        }
    }

    /// REINFORCE is unbiased with every baseline: each coordinate of the mean of `N` estimates
    /// is within 4 standard errors (measured from the same estimates) of the exact gradient;
    /// and the measured trace variance is within 5% of the enumerated one (the relative
    /// standard error of a variance from 20 000 draws is about 1-2% here).
    #[test]
    fn reinforce_is_unbiased_with_every_baseline_and_its_variance_matches_the_enumeration() {
        let cases = [
            (reinforce(1, Baseline::None), Some(5.542_938)),
            (reinforce(1, Baseline::MovingAverage { decay: 0.9 }), None),
            (reinforce(4, Baseline::None), Some(1.385_734)),
            (reinforce(4, Baseline::LeaveOneOut), Some(1.210_562)),
        ];
        for (seed, (estimator, trace_variance)) in (11..).zip(cases) {
            let stats = draw(estimator, seed);
            assert_within_standard_errors(&stats, &EXACT, 4.0);
            assert!(stats.cosine > 0.999, "{stats:?}");
            if let Some(expected) = trace_variance {
                assert_relative(stats.trace_variance, expected, 0.05);
            }
        }
    }

    /// Measured (seed 21, N = 20 000): trace variance about 5.55 without a baseline, 2.51 with the
    /// moving average (ratio 2.2; an ideal constant baseline `E f` would give 2.48), and with
    /// 4 samples 1.40 without a baseline, 1.22 with the leave-one-out one (ratio 1.15; the
    /// enumeration gives 1.145: on this toy most of the variance is in `f`'s spread, which
    /// no baseline removes).
    #[test]
    fn baselines_reduce_the_measured_variance() {
        let plain = draw(reinforce(1, Baseline::None), 21).trace_variance;
        let moving = draw(reinforce(1, Baseline::MovingAverage { decay: 0.9 }), 21).trace_variance;
        assert!(plain / moving > 1.8, "{plain} / {moving}");
        let plain4 = draw(reinforce(4, Baseline::None), 21).trace_variance;
        let loo4 = draw(reinforce(4, Baseline::LeaveOneOut), 21).trace_variance;
        assert!(plain4 / loo4 > 1.08, "{plain4} / {loo4}");
        // More samples divide the variance by about k: 5.54 / 1.386 = 4.0 by enumeration.
        assert!((3.6..4.4).contains(&(plain / plain4)), "{plain} / {plain4}");
    }

    /// Straight-through is biased: its mean matches the enumerated expectation of the
    /// straight-through estimate (within 4 standard errors), which is 0.537 from the exact
    /// gradient, 40 standard errors of the mean norm at N = 20 000, yet points the same way
    /// (cosine 0.970). Its variance (3.58) is below REINFORCE's without a baseline (5.54).
    #[test]
    fn straight_through_is_biased_towards_its_enumerated_expectation_but_points_the_right_way() {
        let stats = draw(
            GradientEstimator::Pathwise(CategoricalEstimator::StraightThrough),
            31,
        );
        assert_within_standard_errors(&stats, &[1.419_630, 0.086_494, -0.211_840, -1.294_284], 4.0);
        let standard_error_norm = (stats.trace_variance / N as f64).sqrt();
        assert!(stats.bias_norm > 10.0 * standard_error_norm, "{stats:?}");
        assert_relative(stats.bias_norm, 0.536_692, 0.1);
        assert!((0.95..0.99).contains(&stats.cosine), "{stats:?}");
        assert_relative(stats.trace_variance, 3.582_203, 0.05);
        assert!(stats.trace_variance < 5.542_938, "{stats:?}");
    }

    /// Gumbel-softmax estimates the gradient of the relaxed objective `E f(y_τ)`, not of
    /// `E f(z)`: biased at every temperature. As `τ` falls from 2 to 0.25 its bias norm and
    /// its angle to the exact gradient shrink (measured 1.01, 0.56, 0.22, 0.10; cosine 0.967
    /// to 0.998) while its variance grows (0.09, 0.68, 3.2, 9.6): the bias-variance trade of
    /// the temperature. Below 0.25 the bias is within the noise of 20 000 draws, so it is
    /// not asserted there.
    #[test]
    fn gumbel_softmax_bias_shrinks_and_variance_grows_as_the_temperature_falls() {
        let temperatures = [2.0, 1.0, 0.5, 0.25];
        let stats: Vec<EstimateStats> = temperatures
            .iter()
            .map(|&temperature| {
                draw(
                    GradientEstimator::Pathwise(CategoricalEstimator::GumbelSoftmax {
                        temperature,
                    }),
                    41,
                )
            })
            .collect();
        for pair in stats.windows(2) {
            let (hot, cold) = (&pair[0], &pair[1]);
            assert!(
                cold.bias_norm < 0.7 * hot.bias_norm,
                "{hot:?} then {cold:?}"
            );
            assert!(cold.cosine > hot.cosine, "{hot:?} then {cold:?}");
            assert!(
                cold.trace_variance > 2.0 * hot.trace_variance,
                "{hot:?} then {cold:?}"
            );
        }
        let coldest = stats.last().expect("four temperatures");
        let standard_error_norm = (coldest.trace_variance / N as f64).sqrt();
        assert!(coldest.bias_norm > 2.0 * standard_error_norm, "{coldest:?}");
    }

    /// The relaxed sample `y = softmax((ln p + g) / τ)` approaches the categorical as `τ`
    /// falls: `E[1 - max_k y_k]` (0 for a one-hot) and `||E y - p||` (0 for a sample of `p`)
    /// both shrink; at any `τ` the argmax of `y` is the Gumbel-max sample, distributed as
    /// `p` exactly, so only the relaxation is at stake.
    #[test]
    fn gumbel_softmax_sample_approaches_a_one_hot_sample_of_the_categorical_as_the_temperature_falls()
     {
        let (_guard, device) = crate::test_util::seeded(51);
        let problem = CategoricalProblem::toy();
        let p = [0.455_054f64, 0.167_405, 0.101_536, 0.276_004];
        let mut previous = (f64::INFINITY, f64::INFINITY);
        for temperature in [2.0, 1.0, 0.5, 0.25, 0.1] {
            let latent = problem.latent(CategoricalEstimator::GumbelSoftmax { temperature });
            let theta = Tensor::<2>::from_data(
                TensorData::new(
                    (0..N)
                        .flat_map(|_| problem.logits.clone())
                        .collect::<Vec<f32>>(),
                    [N, 4],
                ),
                &device,
            );
            let y = latent.sample(&latent.dist(theta), Some(latent.noise(N, &device)));
            let not_one_hot = to_f64(y.clone().max_dim(1).neg().add_scalar(1.0).mean())[0];
            let mean = to_f64(y.mean_dim(0));
            let distance = mean
                .iter()
                .zip(p)
                .map(|(m, p)| (m - p).powi(2))
                .sum::<f64>()
                .sqrt();
            eprintln!("tau {temperature}: E[1 - max y] = {not_one_hot}, ||E y - p|| = {distance}");
            assert!(
                not_one_hot < previous.0 && distance < previous.1,
                "tau {temperature}"
            );
            previous = (not_one_hot, distance);
        }
        // Measured (seed 51): E[1 - max y] 0.54, 0.38, 0.22, 0.12, 0.046 and ||E y - p|| 0.148,
        // 0.079, 0.031, 0.013, 0.003 for tau 2, 1, 0.5, 0.25, 0.1.
        assert!(previous.0 < 0.08 && previous.1 < 0.01, "{previous:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_estimates() {
        let problem = CategoricalProblem::toy();
        for estimator in [
            reinforce(2, Baseline::LeaveOneOut),
            GradientEstimator::Pathwise(CategoricalEstimator::StraightThroughGumbel {
                temperature: 0.5,
            }),
        ] {
            let run = || {
                let (_guard, device) = crate::test_util::seeded(3);
                draw_estimates(&problem, &estimator, 64, &device).unwrap()
            };
            let first = run();
            assert_eq!(first, run());
            assert!(first.iter().any(|g| *g != first[0]), "{first:?}");
        }
    }

    #[test]
    fn an_estimator_out_of_range_is_an_invalid_field() {
        let problem = CategoricalProblem::toy();
        let device = wm_backend::test_device();
        let cases = [
            (reinforce(1, Baseline::LeaveOneOut), "samples"),
            (reinforce(0, Baseline::None), "samples"),
            (
                reinforce(2, Baseline::MovingAverage { decay: 1.0 }),
                "baseline.decay",
            ),
            (
                reinforce(2, Baseline::MovingAverage { decay: f64::NAN }),
                "baseline.decay",
            ),
            (
                GradientEstimator::Pathwise(CategoricalEstimator::GumbelSoftmax {
                    temperature: 0.0,
                }),
                "temperature",
            ),
        ];
        for (estimator, field) in cases {
            let err = draw_estimates(&problem, &estimator, 8, &device).expect_err("accepted");
            assert_eq!(err.field, field, "{estimator:?}: {err}");
        }
        let err = draw_estimates(&problem, &reinforce(1, Baseline::None), 0, &device)
            .expect_err("n = 0 accepted");
        assert_eq!(err.field, "n");
    }
}
