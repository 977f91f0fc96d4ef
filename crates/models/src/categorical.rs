//! A vector of categorical latents, shared by the cVAE ([`crate::cvae`]) and the RSSM
//! (`wm-rssm`'s `latent.rs`): `G` independent categoricals of `K` classes each, flattened
//! group-major to `[N, G K]` (group `g` is columns `g K .. (g + 1) K`), with a uniform mix
//! ("unimix", DreamerV3), Gumbel-max samples and the gradient estimators of a sample
//! ([`CategoricalEstimator`]).

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::validate::InvalidField;

/// The gradient estimator of a categorical latent's sample (what [`CategoricalEstimator::sample`]
/// returns and how gradients flow through it). `logits` below are `ln probs` after the
/// uniform mix, `g` is standard Gumbel noise ([`gumbel`]) and `sg` stops the gradient; the
/// one-hot is that of `argmax(logits + g)` (Gumbel-max: an exact sample of `probs`).
///
/// In RON: `StraightThrough`, `GumbelSoftmax(temperature: 0.5)`,
/// `StraightThroughGumbel(temperature: 1.0)`, `Reinforce(baseline: LeaveOneOut(samples: 4))`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum CategoricalEstimator {
    /// `one_hot + probs - sg(probs)` (DreamerV2/V3): one-hot forward, the gradient of the
    /// probabilities backward. Biased, low variance.
    #[default]
    StraightThrough,
    /// The relaxed sample `softmax((logits + g) / temperature)` per group (Jang et al. 2017,
    /// Maddison et al. 2017), forward and backward: not one-hot, a biased gradient of the
    /// relaxed objective that nears the categorical as the temperature falls, with a variance
    /// that grows as it does.
    GumbelSoftmax {
        /// The temperature `tau`, finite and `> 0`. Default 1.
        #[serde(default = "default_temperature")]
        temperature: f64,
    },
    /// `one_hot + y - sg(y)` with `y` the Gumbel-softmax relaxed sample: the one-hot forward
    /// (the same sample as straight-through), the relaxed sample's gradient backward.
    StraightThroughGumbel {
        /// The temperature `tau`, finite and `> 0`. Default 1.
        #[serde(default = "default_temperature")]
        temperature: f64,
    },
    /// The score-function estimator (Williams 1992): the sample is the one-hot with no
    /// gradient at all, and the model's loss adds the surrogate
    /// `(sg(f(z)) - b) (ln q(z) - sg(ln q(z)))` (value 0) whose gradient is
    /// `(f(z) - b) ∇ ln q(z)`, unbiased for any baseline `b` independent of `z`. Only a
    /// model whose loss builds that surrogate accepts it (the cVAE; not the RSSM).
    Reinforce {
        /// The variance-reducing baseline. Default none.
        #[serde(default)]
        baseline: ReinforceBaseline,
    },
}

/// The baseline `b` of [`CategoricalEstimator::Reinforce`].
///
/// In RON: `None`, `MovingAverage(decay: 0.9)`, `Learned(hidden: 64)`,
/// `LeaveOneOut(samples: 4)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ReinforceBaseline {
    /// `b = 0`.
    #[default]
    None,
    /// An exponential moving average of the batch-mean `f` of past updates, bias-corrected
    /// (`m_n / (1 - decay^n)`, 0 before the first update); it uses only earlier batches, so it
    /// is independent of the current samples. Kept in memory (a resumed run starts it again).
    MovingAverage {
        /// The decay, in `[0, 1)`. Default 0.9.
        #[serde(default = "default_decay")]
        decay: f64,
    },
    /// An input-dependent baseline `b(x)`: a one-hidden-layer MLP on the posterior's input,
    /// trained by the squared error `(b(x) - sg(f(z)))^2` (its own loss term, `baseline`),
    /// which reaches no other parameter.
    Learned {
        /// Hidden width of the baseline MLP, `1..=4096`. Default 64.
        #[serde(default = "default_baseline_hidden")]
        hidden: usize,
    },
    /// `samples >= 2` samples of `z` per input; sample `j`'s baseline is the mean `f` of the
    /// other `samples - 1` (the leave-one-out baseline of VIMCO, Mnih & Rezende 2016, as it
    /// reads for a plain expectation; Kool et al. 2019). The decoder's loss is the mean over the
    /// samples.
    LeaveOneOut {
        /// Samples per input, `2..=64`. Default 4.
        #[serde(default = "default_loo_samples")]
        samples: usize,
    },
}

fn default_temperature() -> f64 {
    1.0
}
fn default_decay() -> f64 {
    0.9
}
fn default_baseline_hidden() -> usize {
    64
}
fn default_loo_samples() -> usize {
    4
}

impl CategoricalEstimator {
    /// The first field out of range (path relative to the estimator): `temperature` finite,
    /// `> 0` and at most `1e6`; a baseline's `decay` in `[0, 1)`, `hidden` in `1..=4096`,
    /// `samples` in `2..=64`.
    pub fn validate(&self) -> Result<(), InvalidField> {
        match self {
            Self::StraightThrough => Ok(()),
            Self::GumbelSoftmax { temperature } | Self::StraightThroughGumbel { temperature } => {
                validate_temperature("temperature", *temperature)
            }
            Self::Reinforce { baseline } => match baseline {
                ReinforceBaseline::None => Ok(()),
                ReinforceBaseline::MovingAverage { decay } => {
                    if !(0.0..1.0).contains(decay) {
                        return Err(InvalidField::new(
                            "baseline.decay",
                            format!("must be in [0, 1), got {decay}"),
                        ));
                    }
                    Ok(())
                }
                ReinforceBaseline::Learned { hidden } => {
                    crate::validate::count("baseline.hidden", *hidden, crate::validate::MAX_WIDTH)
                }
                ReinforceBaseline::LeaveOneOut { samples } => {
                    if !(2..=64).contains(samples) {
                        return Err(InvalidField::new(
                            "baseline.samples",
                            format!("must be between 2 and 64, got {samples}"),
                        ));
                    }
                    Ok(())
                }
            },
        }
    }

    /// The temperature of the Gumbel estimators, `None` for the others.
    pub fn temperature(&self) -> Option<f64> {
        match self {
            Self::GumbelSoftmax { temperature } | Self::StraightThroughGumbel { temperature } => {
                Some(*temperature)
            }
            _ => None,
        }
    }

    /// The same estimator with its temperature replaced (no change for the others).
    pub fn with_temperature(&self, temperature: f64) -> Self {
        match self {
            Self::GumbelSoftmax { .. } => Self::GumbelSoftmax { temperature },
            Self::StraightThroughGumbel { .. } => Self::StraightThroughGumbel { temperature },
            other => other.clone(),
        }
    }

    /// Whether the forward value of a sample is the one-hot (all but Gumbel-softmax).
    pub fn one_hot_forward(&self) -> bool {
        !matches!(self, Self::GumbelSoftmax { .. })
    }

    /// A sample of `groups` categoricals with gradients by this estimator, or, without noise,
    /// the mode (one-hot of the most likely class of each group) with the straight-through
    /// gradient, whatever the estimator: acting and evaluation use the mode, and a relaxed
    /// mode has no meaning. REINFORCE's sample carries no gradient.
    ///
    /// # Shapes
    /// - `probs`: `[N, G K]` (tracked), `noise`: standard Gumbel `[N, G K]`; returns `[N, G K]`
    pub fn sample(
        &self,
        probs: Tensor<2>,
        noise: Option<Tensor<2>>,
        groups: usize,
        classes: usize,
    ) -> Tensor<2> {
        let Some(gumbel) = noise else {
            let one_hot = one_hot_argmax(probs.clone().detach(), groups, classes);
            return straight_through(one_hot, probs);
        };
        match self {
            Self::StraightThrough => {
                let score = probs.clone().detach().log() + gumbel;
                straight_through(one_hot_argmax(score, groups, classes), probs)
            }
            Self::GumbelSoftmax { temperature } => {
                relaxed_sample(probs, gumbel, *temperature, groups, classes)
            }
            Self::StraightThroughGumbel { temperature } => {
                let relaxed = relaxed_sample(probs, gumbel, *temperature, groups, classes);
                let one_hot = one_hot_argmax(relaxed.clone().detach(), groups, classes);
                straight_through(one_hot, relaxed)
            }
            Self::Reinforce { .. } => {
                let score = probs.detach().log() + gumbel;
                one_hot_argmax(score, groups, classes)
            }
        }
    }
}

/// The shape of a vector of categoricals: `groups` in `1..=MAX_WIDTH`, `classes` in
/// `2..=MAX_WIDTH`, `groups * classes` at most `MAX_WIDTH`, `unimix` in `[0, 1)` (the cVAE's and
/// the RSSM's latent).
pub fn validate_shape(groups: usize, classes: usize, unimix: f64) -> Result<(), InvalidField> {
    use crate::validate::{self, MAX_WIDTH};
    validate::count("groups", groups, MAX_WIDTH)?;
    if !(2..=MAX_WIDTH).contains(&classes) {
        return Err(InvalidField::new(
            "classes",
            format!("must be between 2 and {MAX_WIDTH}, got {classes}"),
        ));
    }
    if groups.saturating_mul(classes) > MAX_WIDTH {
        return Err(InvalidField::new(
            "groups",
            format!("times classes must be at most {MAX_WIDTH}, got {groups} x {classes}"),
        ));
    }
    if !(0.0..1.0).contains(&unimix) {
        return Err(InvalidField::new(
            "unimix",
            format!("must be in [0, 1), got {unimix}"),
        ));
    }
    Ok(())
}

/// `field` finite in `(0, 1e6]`.
pub fn validate_temperature(field: &str, temperature: f64) -> Result<(), InvalidField> {
    if !(temperature.is_finite() && temperature > 0.0 && temperature <= 1e6) {
        return Err(InvalidField::new(
            field,
            format!("must be a finite number in (0, 1e6], got {temperature}"),
        ));
    }
    Ok(())
}

/// An exponential temperature anneal of the Gumbel estimators: from the estimator's
/// `temperature` `t0` to `min` over `updates` updates, `t(n) = max(min, t0 (min / t0)^(n /
/// updates))`, then `min`.
///
/// In RON: `(min: 0.1, updates: 5000)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemperatureAnneal {
    /// The final temperature, finite in `(0, 1e6]` and at most the initial one.
    pub min: f64,
    /// Updates to reach it, `1..=10^9`.
    pub updates: u64,
}

impl TemperatureAnneal {
    /// The temperature at update `n` from `t0`.
    pub fn at(&self, t0: f64, n: u64) -> f64 {
        let frac = (n as f64 / self.updates as f64).min(1.0);
        (t0 * (self.min / t0).powf(frac)).max(self.min)
    }

    /// The first field out of range (relative to the anneal), given the initial temperature.
    pub fn validate(&self, t0: f64) -> Result<(), InvalidField> {
        validate_temperature("min", self.min)?;
        if self.min > t0 {
            return Err(InvalidField::new(
                "min",
                format!(
                    "must be at most the initial temperature {t0} (the anneal lowers it), got {}",
                    self.min
                ),
            ));
        }
        if !(1..=1_000_000_000).contains(&self.updates) {
            return Err(InvalidField::new(
                "updates",
                format!("must be between 1 and 10^9, got {}", self.updates),
            ));
        }
        Ok(())
    }
}

/// Class probabilities `(1 - unimix) softmax(logits) + unimix / K` of each group.
///
/// # Shapes
/// - `logits`: `[N, G K]`; returns `[N, G K]`
pub fn probs(logits: Tensor<2>, groups: usize, classes: usize, unimix: f64) -> Tensor<2> {
    let [n, w] = logits.dims();
    assert_eq!(
        w,
        groups * classes,
        "logits shape {:?}, expected [N, {groups} x {classes}]",
        logits.dims()
    );
    let probs = softmax(logits.reshape([n, groups, classes]), 2);
    let probs = if unimix > 0.0 {
        probs
            .mul_scalar(1.0 - unimix)
            .add_scalar(unimix / classes as f64)
    } else {
        probs
    };
    probs.reshape([n, w])
}

/// `KL(p || q) = sum_groups sum_classes p (ln p - ln q)`, per row.
///
/// # Shapes
/// - `p`, `q`: `[N, G K]`; returns `[N]`
pub fn kl(p: Tensor<2>, q: Tensor<2>) -> Tensor<1> {
    let [n, _] = p.dims();
    assert_eq!(
        p.dims(),
        q.dims(),
        "KL of probabilities shaped {:?} and {:?}",
        p.dims(),
        q.dims()
    );
    (p.clone() * (p.log() - q.log())).sum_dim(1).reshape([n])
}

/// `sum_{g, c} z_{g c} ln p_{g c}`: the log-probability of the chosen class of each group,
/// summed over groups, when `z` is one-hot per group.
///
/// # Shapes
/// - `probs`, `z`: `[N, G K]`; returns `[N]`
pub fn log_prob(probs: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    let [n, _] = z.dims();
    assert_eq!(
        z.dims(),
        probs.dims(),
        "z shape {:?}, expected the distribution's {:?}",
        z.dims(),
        probs.dims()
    );
    (z * probs.log()).sum_dim(1).reshape([n])
}

/// The Gumbel-softmax relaxed sample `softmax((ln probs + g) / temperature)` of each group,
/// tracked through `probs`; its argmax is the Gumbel-max sample `argmax(ln probs + g)`.
///
/// # Shapes
/// - `probs`, `gumbel`: `[N, G K]`; returns `[N, G K]`
pub fn relaxed_sample(
    probs: Tensor<2>,
    gumbel: Tensor<2>,
    temperature: f64,
    groups: usize,
    classes: usize,
) -> Tensor<2> {
    let [n, w] = probs.dims();
    assert_eq!(
        (w, gumbel.dims()),
        (groups * classes, [n, w]),
        "probs shape {:?}, noise shape {:?}, expected [N, {groups} x {classes}] each",
        probs.dims(),
        gumbel.dims()
    );
    let score = (probs.log() + gumbel.detach()).div_scalar(temperature); // [N, G K]
    softmax(score.reshape([n, groups, classes]), 2).reshape([n, w])
}

/// Standard Gumbel noise `-ln(-ln u)`, `u ~ U(0, 1)` clamped away from 0 and 1, from the
/// device RNG; untracked.
pub fn gumbel(shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::<2>::random(shape, Distribution::Uniform(0.0, 1.0), device)
        .detach()
        .clamp(1e-7, 1.0 - 1e-7)
        .log()
        .neg()
        .log()
        .neg()
}

/// One-hot of the largest score of each group (the first on exact ties); untracked.
///
/// # Shapes
/// - `score`: `[N, G K]`; returns `[N, G K]`
pub fn one_hot_argmax(score: Tensor<2>, groups: usize, classes: usize) -> Tensor<2> {
    let [n, w] = score.dims();
    assert_eq!(w, groups * classes, "score shape {:?}", score.dims());
    let device = score.device();
    let index = score.detach().reshape([n, groups, classes]).argmax(2); // [N, G, 1]
    let classes_row = Tensor::<1, Int>::arange(0..classes as i64, &device)
        .reshape([1, 1, classes])
        .expand([n, groups, classes]);
    classes_row
        .equal(index.expand([n, groups, classes]))
        .float()
        .reshape([n, w])
}

/// `value + probs - sg(probs)`: forward value `value`, gradient that of `probs`.
pub fn straight_through(value: Tensor<2>, probs: Tensor<2>) -> Tensor<2> {
    let offset = value - probs.clone().detach(); // untracked
    probs + offset
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `t(n) = 1 * (0.1 / 1)^(n / 100)`: 1 at 0, `0.1^0.5 = 0.316228` at 50, 0.1 from 100 on.
    #[test]
    fn temperature_anneal_is_exponential_from_t0_to_min_then_flat() {
        let a = TemperatureAnneal {
            min: 0.1,
            updates: 100,
        };
        assert!((a.at(1.0, 0) - 1.0).abs() < 1e-12);
        assert!(
            (a.at(1.0, 50) - 0.316_227_766).abs() < 1e-8,
            "{}",
            a.at(1.0, 50)
        );
        assert!((a.at(1.0, 100) - 0.1).abs() < 1e-12);
        assert!((a.at(1.0, 10_000) - 0.1).abs() < 1e-12);
        assert_eq!(a.validate(1.0), Ok(()));
        let err = a.validate(0.05).expect_err("min above t0 accepted");
        assert_eq!(err.field, "min", "{err}");
        let err = TemperatureAnneal {
            min: 0.1,
            updates: 0,
        }
        .validate(1.0)
        .expect_err("zero updates accepted");
        assert_eq!(err.field, "updates", "{err}");
    }

    #[test]
    fn reinforce_baselines_out_of_range_are_invalid_fields() {
        let bad = [
            (
                ReinforceBaseline::MovingAverage { decay: 1.0 },
                "baseline.decay",
            ),
            (ReinforceBaseline::Learned { hidden: 0 }, "baseline.hidden"),
            (
                ReinforceBaseline::LeaveOneOut { samples: 1 },
                "baseline.samples",
            ),
        ];
        for (baseline, field) in bad {
            let err = CategoricalEstimator::Reinforce { baseline }
                .validate()
                .expect_err("bad baseline accepted");
            assert_eq!(err.field, field, "{err}");
        }
        let parsed: CategoricalEstimator =
            ron::from_str("Reinforce(baseline: LeaveOneOut(samples: 3))").unwrap();
        assert_eq!(
            parsed,
            CategoricalEstimator::Reinforce {
                baseline: ReinforceBaseline::LeaveOneOut { samples: 3 }
            }
        );
    }
}
