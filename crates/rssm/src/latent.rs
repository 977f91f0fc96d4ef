//! The stochastic latent `z` of the RSSM: diagonal Gaussian or a vector of categoricals.
//!
//! Both kinds are built from the output of a linear "stats" layer and give a sample (with
//! gradients: reparameterised for the Gaussian; for the categoricals, the estimator that
//! [`CategoricalEstimator`] names: straight-through, Gumbel-softmax or straight-through
//! Gumbel, or REINFORCE, whose score-function term is built by the RSSM's loss), a mode and the analytic KL divergence. The
//! categorical maths is `wm_models::categorical`'s, shared with the cVAE. Rows are independent: shapes are
//! `[N, width]`.

use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

/// Which latent the RSSM uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum LatentConfig {
    /// `z ~ N(mean, diag(std^2))` with `std = softplus(raw) + min_std` (PlaNet, DreamerV1).
    Gaussian {
        /// Latent width `S`. Default 30.
        #[serde(default = "default_size")]
        size: usize,
        /// Lower bound of the standard deviation. Default 0.1.
        #[serde(default = "default_min_std")]
        min_std: f64,
    },
    /// `groups` independent categoricals of `classes` classes each, flattened to one-hot
    /// vectors of width `S = groups * classes` (DreamerV2/V3). The gradient of a sample is
    /// `estimator`'s, by default straight-through: `one_hot + probs - sg(probs)`.
    Categorical {
        /// Number of categoricals `G`. Default 32.
        #[serde(default = "default_groups")]
        groups: usize,
        /// Classes per categorical `K`. Default 32.
        #[serde(default = "default_classes")]
        classes: usize,
        /// Uniform mixture weight: `probs = (1 - unimix) softmax(logits) + unimix / K`.
        /// Default 0.01.
        #[serde(default = "default_unimix")]
        unimix: f64,
        /// How a sample carries gradients to the logits. Default straight-through.
        #[serde(default)]
        estimator: CategoricalEstimator,
    },
}

pub use wm_models::categorical::{
    CategoricalEstimator, ReinforceBaseline, one_hot_argmax, relaxed_sample, straight_through,
};

fn default_size() -> usize {
    30
}
fn default_min_std() -> f64 {
    0.1
}
fn default_groups() -> usize {
    32
}
fn default_classes() -> usize {
    32
}
fn default_unimix() -> f64 {
    0.01
}

impl Default for LatentConfig {
    fn default() -> Self {
        Self::Gaussian {
            size: default_size(),
            min_std: default_min_std(),
        }
    }
}

impl LatentConfig {
    /// The default categorical latent, 32 x 32 with 1% uniform mix.
    pub fn categorical() -> Self {
        Self::Categorical {
            groups: default_groups(),
            classes: default_classes(),
            unimix: default_unimix(),
            estimator: CategoricalEstimator::default(),
        }
    }

    /// Width `S` of the flattened latent (`size`, or `groups * classes`).
    pub fn stoch_width(&self) -> usize {
        match self {
            Self::Gaussian { size, .. } => *size,
            Self::Categorical {
                groups, classes, ..
            } => groups * classes,
        }
    }

    /// The number of independent categoricals `G`; 1 for the Gaussian.
    pub fn groups(&self) -> usize {
        match self {
            Self::Gaussian { .. } => 1,
            Self::Categorical { groups, .. } => *groups,
        }
    }

    /// Width of the stats layer output: `2 S` (mean, raw std) or `G K` (logits).
    pub fn stats_width(&self) -> usize {
        match self {
            Self::Gaussian { size, .. } => 2 * size,
            Self::Categorical {
                groups, classes, ..
            } => groups * classes,
        }
    }

    /// The first field out of range (path relative to the latent): a Gaussian's `size` in
    /// `1..=MAX_WIDTH` and `min_std` finite in `[0, 1e3]`; a categorical's `groups * classes`
    /// at most `MAX_WIDTH`, `classes >= 2`, `unimix` in `[0, 1)` and the estimator's
    /// temperature finite in `(0, 1e6]`.
    pub fn validate(&self) -> Result<(), wm_models::InvalidField> {
        use wm_models::{InvalidField, validate};
        match self {
            Self::Gaussian { size, min_std } => {
                validate::count("size", *size, validate::MAX_WIDTH)?;
                validate::within("min_std", *min_std, 0.0, 1e3)?;
            }
            Self::Categorical {
                groups,
                classes,
                unimix,
                estimator,
            } => {
                wm_models::categorical::validate_shape(*groups, *classes, *unimix)?;
                if let CategoricalEstimator::Reinforce {
                    baseline:
                        baseline @ (ReinforceBaseline::Learned { .. }
                        | ReinforceBaseline::LeaveOneOut { .. }),
                } = estimator
                {
                    return Err(InvalidField::new(
                        "estimator.baseline",
                        format!(
                            "{baseline:?} is the cVAE's only; the RSSM's REINFORCE takes None or \
                             MovingAverage (one average per time step)"
                        ),
                    ));
                }
                estimator.validate().map_err(|e| e.within("estimator"))?;
            }
        }
        Ok(())
    }

    /// The same latent with REINFORCE replaced by straight-through: the estimator of prior
    /// samples in imagination, whose gradients reach the actor through the dynamics (the
    /// score-function surrogate exists only in the posterior's training loss).
    pub fn pathwise(&self) -> std::borrow::Cow<'_, Self> {
        match self {
            Self::Categorical {
                groups,
                classes,
                unimix,
                estimator: CategoricalEstimator::Reinforce { .. },
            } => std::borrow::Cow::Owned(Self::Categorical {
                groups: *groups,
                classes: *classes,
                unimix: *unimix,
                estimator: CategoricalEstimator::StraightThrough,
            }),
            _ => std::borrow::Cow::Borrowed(self),
        }
    }

    /// The distribution given by a stats-layer output.
    ///
    /// # Shapes
    /// - `stats`: `[N, stats_width]`; the distribution's tensors are `[N, S]`.
    pub fn dist(&self, stats: Tensor<2>) -> LatentDist<2> {
        let [_, w] = stats.dims();
        assert_eq!(
            w,
            self.stats_width(),
            "latent stats shape {:?}, expected [N, {}]",
            stats.dims(),
            self.stats_width()
        );
        match self {
            Self::Gaussian { size, min_std } => {
                let mean = stats.clone().narrow(1, 0, *size);
                let std = softplus(stats.narrow(1, *size, *size)).add_scalar(*min_std);
                LatentDist::Gaussian { mean, std }
            }
            Self::Categorical {
                groups,
                classes,
                unimix,
                ..
            } => LatentDist::Categorical {
                probs: wm_models::categorical::probs(stats, *groups, *classes, *unimix),
            },
        }
    }

    /// Noise for `n` samples, drawn from the device RNG (seed it with [`Device::seed`]):
    /// standard normal `[n, S]` for the Gaussian, standard Gumbel `[n, G K]` for the
    /// categoricals. Never tracked by autodiff.
    pub fn noise(&self, n: usize, device: &Device) -> Tensor<2> {
        let s = self.stoch_width();
        match self {
            Self::Gaussian { .. } => {
                Tensor::random([n, s], Distribution::Normal(0.0, 1.0), device).detach()
            }
            Self::Categorical { .. } => wm_models::categorical::gumbel([n, s], device),
        }
    }

    /// A sample (with `noise` from [`LatentConfig::noise`]) or, without noise, the mode
    /// (Gaussian mean; one-hot of the most likely class of each group). Gradients: the
    /// Gaussian sample is reparameterised, `mean + std * eps`; the categorical one follows
    /// its [`CategoricalEstimator`] (by default straight-through, `one_hot + probs -
    /// sg(probs)`, whose forward value is the one-hot and whose gradient is that of `probs`;
    /// the mode is always straight-through).
    ///
    /// # Shapes
    /// - `dist`: `[N, S]` tensors, `noise`: `[N, S]`; returns `[N, S]`
    pub fn sample(&self, dist: &LatentDist<2>, noise: Option<Tensor<2>>) -> Tensor<2> {
        match (self, dist) {
            (Self::Gaussian { .. }, LatentDist::Gaussian { mean, std }) => match noise {
                Some(eps) => mean.clone() + std.clone() * eps,
                None => mean.clone(),
            },
            (
                Self::Categorical {
                    groups,
                    classes,
                    estimator,
                    ..
                },
                LatentDist::Categorical { probs },
            ) => estimator.sample(probs.clone(), noise, *groups, *classes),
            _ => panic!("latent config {self:?} does not match the distribution kind"),
        }
    }
}

/// `softplus(x) = ln(1 + e^x)`, stable for any `x`: [`wm_kernels::softplus`], one fused
/// operation on flex, `-log_sigmoid(-x)` (two autodiff operations) on other devices.
pub fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    wm_kernels::softplus(x)
}

/// A latent distribution's parameters.
#[derive(Clone, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "tensor handles, short-lived and never stored in bulk"
)]
pub enum LatentDist<const D: usize> {
    /// Diagonal Gaussian: mean and standard deviation, `[.., S]` each.
    Gaussian {
        /// Mean.
        mean: Tensor<D>,
        /// Standard deviation (already `softplus(raw) + min_std`).
        std: Tensor<D>,
    },
    /// `G` categoricals: class probabilities (after the uniform mix), flattened to
    /// `[.., G K]` group-major (group `g` is columns `g K .. (g + 1) K`).
    Categorical {
        /// Class probabilities.
        probs: Tensor<D>,
    },
}

impl<const D: usize> LatentDist<D> {
    /// The same distribution with its tensors detached (stop-gradient).
    pub fn detach(&self) -> Self {
        self.map(|t| t.detach())
    }

    /// Applies `f` to every tensor of the distribution.
    pub fn map<const D2: usize>(&self, f: impl Fn(Tensor<D>) -> Tensor<D2>) -> LatentDist<D2> {
        match self {
            Self::Gaussian { mean, std } => LatentDist::Gaussian {
                mean: f(mean.clone()),
                std: f(std.clone()),
            },
            Self::Categorical { probs } => LatentDist::Categorical {
                probs: f(probs.clone()),
            },
        }
    }

    /// Concatenates distributions along `dim`.
    pub fn cat(parts: Vec<Self>, dim: usize) -> Self {
        match parts.first() {
            Some(Self::Gaussian { .. }) => {
                let (means, stds): (Vec<_>, Vec<_>) = parts
                    .into_iter()
                    .map(|p| match p {
                        Self::Gaussian { mean, std } => (mean, std),
                        _ => panic!("cannot concatenate mixed latent kinds"),
                    })
                    .unzip();
                Self::Gaussian {
                    mean: Tensor::cat(means, dim),
                    std: Tensor::cat(stds, dim),
                }
            }
            Some(Self::Categorical { .. }) => Self::Categorical {
                probs: Tensor::cat(
                    parts
                        .into_iter()
                        .map(|p| match p {
                            Self::Categorical { probs } => probs,
                            _ => panic!("cannot concatenate mixed latent kinds"),
                        })
                        .collect(),
                    dim,
                ),
            },
            None => panic!("LatentDist::cat of nothing"),
        }
    }
}

impl LatentDist<2> {
    /// Analytic `KL(self || other)`, summed over the latent dimensions (and groups).
    ///
    /// - Gaussian: `sum ln(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2`.
    /// - Categorical: `sum_groups sum_classes p (ln p - ln q)`.
    ///
    /// # Shapes
    /// - both `[N, S]`; returns `[N]`
    pub fn kl(&self, other: &Self) -> Tensor<1> {
        match (self, other) {
            (Self::Gaussian { mean: mq, std: sq }, Self::Gaussian { mean: mp, std: sp }) => {
                wm_models::dist::kl_diag_gaussian(
                    mq.clone(),
                    sq.clone().log(),
                    mp.clone(),
                    sp.clone().log(),
                )
            }
            (Self::Categorical { probs: p }, Self::Categorical { probs: q }) => {
                wm_models::categorical::kl(p.clone(), q.clone())
            }
            _ => panic!("KL between different latent kinds"),
        }
    }

    /// Log-density (Gaussian) or log-probability (categorical, `z` one-hot per group) of `z`,
    /// summed over the latent dimensions (and groups), nats:
    ///
    /// - Gaussian: `sum_s ln N(z_s; mean_s, std_s^2)`;
    /// - Categorical: `sum_{g, c} z_{g c} ln p_{g c}`, the log-probability of the chosen class of
    ///   each group when `z` is one-hot (as [`LatentConfig::sample`] returns).
    ///
    /// # Shapes
    /// - `self`: `[N, S]` tensors, `z`: `[N, S]`; returns `[N]`
    pub fn log_prob(&self, z: Tensor<2>) -> Tensor<1> {
        match self {
            Self::Gaussian { mean, std } => {
                assert_eq!(
                    z.dims(),
                    mean.dims(),
                    "z shape {:?}, expected the distribution's {:?}",
                    z.dims(),
                    mean.dims()
                );
                wm_models::dist::gaussian_log_prob_sum(z, mean.clone(), std.clone().log())
            }
            Self::Categorical { probs } => wm_models::categorical::log_prob(probs.clone(), z),
        }
    }

    /// Mean of the standard deviations (Gaussian) or mean entropy per group in nats
    /// (categorical: `ln K` for uniform groups, 0 for deterministic ones), `[1]`: a
    /// diagnostic. `groups` is the number of categorical groups the flattened probabilities
    /// hold ([`LatentConfig::groups`]); the Gaussian ignores it.
    pub fn spread(&self, groups: usize) -> Tensor<1> {
        match self {
            Self::Gaussian { std, .. } => std.clone().mean(),
            Self::Categorical { probs } => (probs.clone() * probs.clone().log())
                .sum_dim(1)
                .neg()
                .mean()
                .div_scalar(groups.max(1) as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::TensorData;

    fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn straight_through_sample_is_one_hot_with_the_gradient_of_the_probabilities() {
        let (_guard, device) = crate::test_util::seeded(5);
        let device = device.autodiff();
        let cfg = LatentConfig::Categorical {
            groups: 2,
            classes: 3,
            unimix: 0.01,
            estimator: Default::default(),
        };
        let logits_data = TensorData::new(vec![0.3f32, -1.0, 2.0, 0.5, 0.4, -0.2], [1, 6]);
        let weights = Tensor::<2>::from_floats([[1.0, -2.0, 0.5, 3.0, 0.7, -1.5]], &device);

        // Loss through the straight-through sample.
        let logits = Param::<Tensor<2>>::from_data(logits_data.clone(), &device);
        let dist = cfg.dist(logits.val());
        let noise = cfg.noise(1, &device);
        let z = cfg.sample(&dist, Some(noise));
        let values = vec(z.clone().detach());
        for group in values.chunks(3) {
            let ones = group.iter().filter(|v| **v == 1.0).count();
            let zeros = group.iter().filter(|v| **v == 0.0).count();
            assert_eq!((ones, zeros), (1, 2), "not one-hot: {values:?}");
        }
        let grads = (z * weights.clone()).sum().backward();
        let g_st = vec(logits.val().grad(&grads).expect("logit gradient"));

        // The same loss on the probabilities directly.
        let logits2 = Param::<Tensor<2>>::from_data(logits_data, &device);
        let LatentDist::Categorical { probs } = cfg.dist(logits2.val()) else {
            unreachable!()
        };
        let grads2 = (probs * weights).sum().backward();
        let g_probs = vec(logits2.val().grad(&grads2).expect("logit gradient"));
        assert!(g_probs.iter().any(|g| g.abs() > 1e-4), "{g_probs:?}");
        for (a, b) in g_st.iter().zip(&g_probs) {
            assert!(
                (a - b).abs() < 1e-6,
                "straight-through {g_st:?} vs probs {g_probs:?}"
            );
        }
    }

    #[test]
    fn categorical_kl_matches_a_hand_computed_value() {
        let device = wm_backend::test_device();
        // Two groups of two classes.
        let p = Tensor::<2>::from_floats([[0.8, 0.2, 0.5, 0.5]], &device);
        let q = Tensor::<2>::from_floats([[0.5, 0.5, 0.1, 0.9]], &device);
        let kl = vec(LatentDist::Categorical { probs: p }.kl(&LatentDist::Categorical { probs: q }))
            [0] as f64;
        let expected = 0.8 * (0.8f64 / 0.5).ln()
            + 0.2 * (0.2f64 / 0.5).ln()
            + 0.5 * (0.5f64 / 0.1).ln()
            + 0.5 * (0.5f64 / 0.9).ln();
        // = 0.19274... + 0.51082...
        assert!((kl - expected).abs() < 1e-5, "{kl} vs {expected}");
        assert!((expected - 0.703_564).abs() < 1e-5, "{expected}");
    }

    #[test]
    fn gaussian_kl_is_zero_for_equal_and_positive_for_different_distributions() {
        let device = wm_backend::test_device();
        let g = |m: f32, s: f32| LatentDist::Gaussian {
            mean: Tensor::<2>::from_floats([[m, 0.0]], &device),
            std: Tensor::<2>::from_floats([[s, 1.0]], &device),
        };
        let same = vec(g(0.5, 0.3).kl(&g(0.5, 0.3)))[0];
        assert!(same.abs() < 1e-6, "{same}");
        // KL(N(0, 1) || N(1, 2^2)) = ln 2 + (1 + 1) / 8 - 1/2
        let kl = vec(g(0.0, 1.0).kl(&g(1.0, 2.0)))[0] as f64;
        let expected = 2f64.ln() + 2.0 / 8.0 - 0.5;
        assert!((kl - expected).abs() < 1e-5, "{kl} vs {expected}");
    }

    #[test]
    fn gaussian_std_is_softplus_plus_min_std_and_categorical_probs_mix_in_uniform() {
        let device = wm_backend::test_device();
        let cfg = LatentConfig::Gaussian {
            size: 2,
            min_std: 0.1,
        };
        let stats = Tensor::<2>::from_floats([[0.0, 1.0, -100.0, 50.0]], &device);
        let LatentDist::Gaussian { mean, std } = cfg.dist(stats) else {
            unreachable!()
        };
        assert_eq!(vec(mean), vec![0.0, 1.0]);
        let std = vec(std);
        assert!(
            (std[0] - 0.1).abs() < 1e-6 && (std[1] - 50.1).abs() < 1e-4,
            "{std:?}"
        );

        let cat = LatentConfig::Categorical {
            groups: 1,
            classes: 4,
            unimix: 0.2,
            estimator: Default::default(),
        };
        let LatentDist::Categorical { probs } =
            cat.dist(Tensor::<2>::from_floats([[100.0, 0.0, 0.0, 0.0]], &device))
        else {
            unreachable!()
        };
        let probs = vec(probs);
        let expected = [0.8 + 0.05, 0.05, 0.05, 0.05];
        for (p, e) in probs.iter().zip(expected) {
            assert!((p - e).abs() < 1e-5, "{probs:?}");
        }
    }

    /// Before the fix `spread` summed the entropy over all groups (110 nats for 32 x 32, read
    /// as "per group" by the docs and the logs). Two groups of four classes: the uniform group
    /// has entropy ln 4 = 1.386294, the one `[0.7, 0.1, 0.1, 0.1]` has
    /// `-(0.7 ln 0.7 + 3 * 0.1 ln 0.1)` = 0.940448 (Python: `-sum(p*math.log(p) for p in ps)`);
    /// the mean per group is 1.163371.
    #[test]
    fn categorical_spread_is_the_mean_entropy_per_group() {
        let device = wm_backend::test_device();
        let cfg = LatentConfig::Categorical {
            groups: 2,
            classes: 4,
            unimix: 0.0,
            estimator: Default::default(),
        };
        let probs =
            Tensor::<2>::from_floats([[0.25, 0.25, 0.25, 0.25, 0.7, 0.1, 0.1, 0.1]], &device);
        let spread = vec(LatentDist::Categorical { probs }.spread(cfg.groups()))[0];
        assert!((spread - 1.163371).abs() < 1e-5, "{spread}");
    }

    #[test]
    fn log_prob_matches_hand_computed_gaussian_and_categorical_values() {
        let device = wm_backend::test_device();
        // ln N(0.5; 0, 1) + ln N(1; 2, 0.5^2) = (-0.125 - 0.9189385) + (-2 - ln 0.5 - 0.9189385)
        let g = LatentDist::Gaussian {
            mean: Tensor::<2>::from_floats([[0.0, 2.0]], &device),
            std: Tensor::<2>::from_floats([[1.0, 0.5]], &device),
        };
        let lp = vec(g.log_prob(Tensor::<2>::from_floats([[0.5, 1.0]], &device)))[0] as f64;
        let expected = -0.125 - 0.918_938_533 + (-2.0 - 0.5f64.ln() - 0.918_938_533);
        assert!((lp - expected).abs() < 1e-5, "{lp} vs {expected}");
        // Two groups of two classes, classes 1 and 0 chosen: ln 0.2 + ln 0.5.
        let c = LatentDist::Categorical {
            probs: Tensor::<2>::from_floats([[0.8, 0.2, 0.5, 0.5]], &device),
        };
        let lp =
            vec(c.log_prob(Tensor::<2>::from_floats([[0.0, 1.0, 1.0, 0.0]], &device)))[0] as f64;
        let expected = 0.2f64.ln() + 0.5f64.ln();
        assert!((lp - expected).abs() < 1e-5, "{lp} vs {expected}");
    }

    #[test]
    fn categorical_mode_picks_the_most_likely_class_of_each_group() {
        let device = wm_backend::test_device();
        let score = Tensor::<2>::from_floats([[0.1, 0.7, 0.2, 0.6, 0.3, 0.1]], &device);
        assert_eq!(
            vec(one_hot_argmax(score, 2, 3)),
            vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
        );
    }

    /// One group of three classes, no uniform mix, logits `l = [0.3, -1, 2]`, Gumbel noise
    /// `g = [0.5, 1.2, -0.3]`, temperature 0.5, loss `sum(w * z)` with `w = [1, -2, 0.5]`.
    /// The relaxed sample is `y = softmax((l + g) / 0.5)` (`ln probs` differs from `l` by a
    /// constant, which the softmax ignores) and its gradient `y (w - w.y) / 0.5`:
    /// ```python
    /// import math
    /// l=[0.3,-1.0,2.0]; g=[0.5,1.2,-0.3]; t=0.5; w=[1.0,-2.0,0.5]
    /// s=[(a+b)/t for a,b in zip(l,g)]; e=[math.exp(x-max(s)) for x in s]; y=[x/sum(e) for x in e]
    /// wy=sum(a*b for a,b in zip(w,y)); print(y, [yi*(wi-wy)/t for yi,wi in zip(y,w)])
    /// ```
    /// `y = [0.136039, 0.040974, 0.822987]`, gradient `[0.145403, -0.202050, 0.056648]`.
    fn gumbel_case(estimator: CategoricalEstimator) -> (Vec<f32>, Vec<f32>) {
        let device = wm_backend::test_device().autodiff();
        let cfg = LatentConfig::Categorical {
            groups: 1,
            classes: 3,
            unimix: 0.0,
            estimator,
        };
        let logits = Param::<Tensor<2>>::from_data(
            TensorData::new(vec![0.3f32, -1.0, 2.0], [1, 3]),
            &device,
        );
        let noise = Tensor::<2>::from_floats([[0.5, 1.2, -0.3]], &device);
        let weights = Tensor::<2>::from_floats([[1.0, -2.0, 0.5]], &device);
        let z = cfg.sample(&cfg.dist(logits.val()), Some(noise));
        let value = vec(z.clone().detach());
        let grads = (z * weights).sum().backward();
        (
            value,
            vec(logits.val().grad(&grads).expect("logit gradient")),
        )
    }

    fn assert_close(actual: &[f32], expected: &[f32], tol: f32) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < tol, "{actual:?} vs {expected:?}");
        }
    }

    #[test]
    fn gumbel_softmax_sample_is_the_relaxed_softmax_with_its_own_gradient() {
        let (value, grad) = gumbel_case(CategoricalEstimator::GumbelSoftmax { temperature: 0.5 });
        assert_close(&value, &[0.136_039, 0.040_974, 0.822_987], 1e-5);
        assert_close(&grad, &[0.145_403, -0.202_050, 0.056_648], 1e-5);
    }

    #[test]
    fn straight_through_gumbel_is_one_hot_forward_with_the_relaxed_gradient() {
        let (value, grad) =
            gumbel_case(CategoricalEstimator::StraightThroughGumbel { temperature: 0.5 });
        // argmax(l + g) = argmax([0.8, 0.2, 1.7]) = class 2, the straight-through sample too.
        assert_eq!(value, vec![0.0, 0.0, 1.0]);
        let (st_value, _) = gumbel_case(CategoricalEstimator::StraightThrough);
        assert_eq!(value, st_value);
        assert_close(&grad, &[0.145_403, -0.202_050, 0.056_648], 1e-5);
    }

    #[test]
    fn every_estimator_returns_the_one_hot_mode_without_noise() {
        let device = wm_backend::test_device();
        for estimator in [
            CategoricalEstimator::StraightThrough,
            CategoricalEstimator::GumbelSoftmax { temperature: 0.3 },
            CategoricalEstimator::StraightThroughGumbel { temperature: 2.0 },
        ] {
            let cfg = LatentConfig::Categorical {
                groups: 2,
                classes: 3,
                unimix: 0.01,
                estimator,
            };
            let stats = Tensor::<2>::from_floats([[0.1, 0.7, 0.2, 0.6, 0.3, 0.1]], &device);
            let z = cfg.sample(&cfg.dist(stats), None);
            assert_eq!(vec(z), vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0], "{cfg:?}");
        }
    }

    #[test]
    fn estimator_parses_from_ron_and_defaults_to_straight_through() {
        let old: LatentConfig = ron::from_str("Categorical(groups: 2, classes: 3)").unwrap();
        let LatentConfig::Categorical { estimator, .. } = old else {
            unreachable!()
        };
        assert_eq!(estimator, CategoricalEstimator::StraightThrough);
        let gumbel: LatentConfig = ron::from_str(
            "Categorical(groups: 2, classes: 3, estimator: GumbelSoftmax(temperature: 0.5))",
        )
        .unwrap();
        assert_eq!(
            gumbel,
            LatentConfig::Categorical {
                groups: 2,
                classes: 3,
                unimix: 0.01,
                estimator: CategoricalEstimator::GumbelSoftmax { temperature: 0.5 },
            }
        );
        let st: CategoricalEstimator = ron::from_str("StraightThroughGumbel()").unwrap();
        assert_eq!(
            st,
            CategoricalEstimator::StraightThroughGumbel { temperature: 1.0 }
        );
        assert!(ron::from_str::<CategoricalEstimator>("GumbelSoftmax(tau: 1.0)").is_err());
    }

    #[test]
    fn a_temperature_that_is_not_finite_and_positive_is_an_invalid_field() {
        for temperature in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e7] {
            for estimator in [
                CategoricalEstimator::GumbelSoftmax { temperature },
                CategoricalEstimator::StraightThroughGumbel { temperature },
            ] {
                let cfg = LatentConfig::Categorical {
                    groups: 2,
                    classes: 3,
                    unimix: 0.01,
                    estimator,
                };
                let err = cfg.validate().expect_err("bad temperature accepted");
                assert_eq!(err.field, "estimator.temperature", "{err}");
                assert!(err.message.contains(&format!("{temperature}")), "{err}");
            }
        }
        let ok = LatentConfig::Categorical {
            groups: 2,
            classes: 3,
            unimix: 0.01,
            estimator: CategoricalEstimator::GumbelSoftmax { temperature: 0.1 },
        };
        assert_eq!(ok.validate(), Ok(()));
    }
}
