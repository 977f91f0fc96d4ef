//! The actor: a policy network over world-model features, for discrete actions (a categorical
//! with a uniform mixture) and continuous ones (a Gaussian with a tanh-bounded mean in the unit
//! box and a bounded standard deviation).
//!
//! Actions are handled in two forms. The **policy form** is what the distribution is over: the
//! class index as `f32` (`[N, 1]`), or the unclipped Gaussian sample in unit-box coordinates
//! (`[N, A]`, box `[-1, 1]`). The **raw form** is what a world model and the environment take
//! (`ActionSpec` units): the index again, or the sample clipped to `[-1, 1]` and mapped to
//! `[low, high]`. Log-probabilities are taken of the policy form.

use burn::module::Module;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use wm_models::ActionSpec;
use wm_models::mlp::{Mlp, MlpConfig};

/// `0.5 ln(2 pi e)`, the entropy of a standard normal.
const HALF_LOG_2_PI_E: f32 = 1.418_938_5;

/// Bounds of the actor's output distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyBounds {
    /// Smallest standard deviation of a continuous action (unit-box units).
    pub min_std: f32,
    /// Largest standard deviation.
    pub max_std: f32,
    /// Weight of the uniform distribution mixed into a categorical (DreamerV3: 0.01).
    pub unimix: f32,
}

/// The policy network; see the module docs.
#[derive(Module, Debug)]
pub struct Actor {
    /// `features -> logits (n)` or `features -> [mean (A) | raw std (A)]`.
    pub net: Mlp,
    #[module(skip)]
    action: ActionSpec,
    #[module(skip)]
    bounds: PolicyBounds,
}

/// The action distribution for a batch of features.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per actor call; boxing the tensors gains nothing
pub enum PolicyDist {
    /// Log-probabilities of the classes (after the uniform mixture), `[N, n]`.
    Categorical {
        /// `[N, n]`.
        log_probs: Tensor<2>,
    },
    /// Independent Gaussians per action dimension, in unit-box coordinates.
    Normal {
        /// `[N, A]`, in `(-1, 1)`.
        mean: Tensor<2>,
        /// `[N, A]`, in `[min_std, max_std]`.
        std: Tensor<2>,
    },
}

impl Actor {
    /// A new actor reading `feature_dim` features, with SiLU hidden layers of `hidden` widths.
    pub fn new(
        feature_dim: usize,
        hidden: &[usize],
        action: &ActionSpec,
        bounds: PolicyBounds,
        device: &Device,
    ) -> Self {
        let output = match action {
            ActionSpec::Discrete { n } => *n,
            ActionSpec::Continuous { low, .. } => 2 * low.len(),
        };
        Self {
            net: MlpConfig::new(feature_dim, hidden.to_vec(), output).init(device),
            action: action.clone(),
            bounds,
        }
    }

    /// The action space.
    pub fn action_spec(&self) -> &ActionSpec {
        &self.action
    }

    /// The action distribution.
    ///
    /// # Shapes
    /// - `features`: `[N, F]`; the distribution's tensors are `[N, n]` or `[N, A]`
    pub fn forward(&self, features: Tensor<2>) -> PolicyDist {
        let out = self.net.forward(features);
        match &self.action {
            ActionSpec::Discrete { n } => {
                let probs = softmax(out, 1)
                    .mul_scalar(1.0 - self.bounds.unimix)
                    .add_scalar(self.bounds.unimix / *n as f32);
                PolicyDist::Categorical {
                    log_probs: probs.log(),
                }
            }
            ActionSpec::Continuous { low, .. } => {
                let a = low.len();
                let mean = out.clone().narrow(1, 0, a).tanh();
                let PolicyBounds {
                    min_std, max_std, ..
                } = self.bounds;
                let std = sigmoid(out.narrow(1, a, a).add_scalar(2.0))
                    .mul_scalar(max_std - min_std)
                    .add_scalar(min_std);
                PolicyDist::Normal { mean, std }
            }
        }
    }

    /// Raw actions (world-model and environment units) from actions in the policy form.
    ///
    /// # Shapes
    /// - `action`: `[N, n or A]` policy form (`[N, 1]` for discrete); returns `[N, raw width]`
    pub fn to_raw(&self, action: Tensor<2>) -> Tensor<2> {
        match &self.action {
            ActionSpec::Discrete { .. } => action,
            ActionSpec::Continuous { .. } => {
                let device = action.device();
                let w = self.action.raw_width();
                let (scale, shift) = self.action.unit_box_affine();
                let row = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [1, w]), &device);
                (action.clamp(-1.0, 1.0) - row(shift)) / row(scale)
            }
        }
    }
}

impl PolicyDist {
    /// Batch size `N`.
    pub fn batch_size(&self) -> usize {
        match self {
            Self::Categorical { log_probs } => log_probs.dims()[0],
            Self::Normal { mean, .. } => mean.dims()[0],
        }
    }

    /// A sample in the policy form, from the device RNG (Gumbel-max for classes).
    ///
    /// # Shapes
    /// - returns `[N, 1]` or `[N, A]`
    pub fn sample(&self) -> Tensor<2> {
        match self {
            Self::Categorical { log_probs } => {
                let device = log_probs.device();
                let u =
                    Tensor::<2>::random(log_probs.dims(), Distribution::Uniform(0.0, 1.0), &device)
                        .clamp(1e-20, 1.0 - 1e-7);
                let gumbel = u.log().neg().log().neg();
                (log_probs.clone().detach() + gumbel).argmax(1).float()
            }
            Self::Normal { mean, std } => {
                let noise = Tensor::<2>::random(
                    mean.dims(),
                    Distribution::Normal(0.0, 1.0),
                    &mean.device(),
                );
                (mean.clone() + std.clone() * noise).detach()
            }
        }
    }

    /// The most likely action in the policy form (evaluation, no exploration).
    ///
    /// # Shapes
    /// - returns `[N, 1]` or `[N, A]`
    pub fn mode(&self) -> Tensor<2> {
        match self {
            Self::Categorical { log_probs } => log_probs.clone().detach().argmax(1).float(),
            Self::Normal { mean, .. } => mean.clone().detach(),
        }
    }

    /// `log pi(action)` of actions in the policy form.
    ///
    /// # Shapes
    /// - `action`: `[N, 1]` or `[N, A]`; returns `[N]`
    pub fn log_prob(&self, action: Tensor<2>) -> Tensor<1> {
        let n = self.batch_size();
        match self {
            Self::Categorical { log_probs } => {
                let [_, k] = log_probs.dims();
                assert_eq!(
                    action.dims(),
                    [n, 1],
                    "categorical action shape {:?}, expected [{n}, 1]",
                    action.dims()
                );
                let device = log_probs.device();
                let classes = Tensor::<1, Int>::arange(0..k as i64, &device)
                    .float()
                    .reshape([1, k])
                    .expand([n, k]);
                let one_hot = classes.equal(action.detach().expand([n, k])).float();
                (log_probs.clone() * one_hot).sum_dim(1).reshape([n])
            }
            Self::Normal { mean, std } => {
                assert_eq!(
                    action.dims(),
                    mean.dims(),
                    "continuous action shape {:?}, expected {:?}",
                    action.dims(),
                    mean.dims()
                );
                let z = (action.detach() - mean.clone()) / std.clone();
                let per_dim = z.square().mul_scalar(-0.5)
                    - std.clone().log()
                    - (0.5 * (2.0 * std::f32::consts::PI).ln());
                per_dim.sum_dim(1).reshape([n])
            }
        }
    }

    /// The entropy of each row's distribution, in nats.
    ///
    /// # Shapes
    /// - returns `[N]`
    pub fn entropy(&self) -> Tensor<1> {
        let n = self.batch_size();
        match self {
            Self::Categorical { log_probs } => (log_probs.clone().exp() * log_probs.clone())
                .sum_dim(1)
                .reshape([n])
                .neg(),
            Self::Normal { std, .. } => std
                .clone()
                .log()
                .add_scalar(HALF_LOG_2_PI_E)
                .sum_dim(1)
                .reshape([n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host<const D: usize>(x: Tensor<D>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().expect("f32")
    }

    const BOUNDS: PolicyBounds = PolicyBounds {
        min_std: 0.1,
        max_std: 1.0,
        unimix: 0.01,
    };

    #[test]
    fn gaussian_log_prob_and_entropy_match_the_closed_form() {
        // python: -0.5 * ((0.1 - 0.5) / 0.2) ** 2 - log(0.2) - 0.5 * log(2 * pi) = -1.3095006
        //         0.5 * log(2 * pi * e) + log(0.2) = -0.1904993 (both per dimension)
        let device = wm_backend::test_device();
        let dist = PolicyDist::Normal {
            mean: Tensor::from_floats([[0.5, 0.5]], &device),
            std: Tensor::from_floats([[0.2, 0.2]], &device),
        };
        let lp = host(dist.log_prob(Tensor::from_floats([[0.1, 0.1]], &device)))[0];
        assert!((lp - 2.0 * -1.309_500_6).abs() < 1e-4, "{lp}");
        let h = host(dist.entropy())[0];
        assert!((h - 2.0 * -0.190_499_3).abs() < 1e-4, "{h}");
    }

    #[test]
    fn categorical_log_prob_entropy_and_samples_agree_with_the_probabilities() {
        let device = wm_backend::test_device();
        device.seed(3);
        let probs = [0.7f32, 0.2, 0.1];
        let row: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let log_probs =
            Tensor::<2>::from_data(TensorData::new(row.repeat(4000), [4000, 3]), &device);
        let dist = PolicyDist::Categorical { log_probs };
        let picked = host(dist.log_prob(Tensor::from_data(
            TensorData::new(vec![1.0f32; 4000], [4000, 1]),
            &device,
        )))[0];
        assert!((picked - 0.2f32.ln()).abs() < 1e-6, "{picked}");
        let h = host(dist.entropy())[0];
        let want: f32 = -probs.iter().map(|p| p * p.ln()).sum::<f32>();
        assert!((h - want).abs() < 1e-5, "{h} vs {want}");
        let samples = host(dist.sample());
        for (class, p) in probs.iter().enumerate() {
            let frequency = samples.iter().filter(|&&s| s == class as f32).count() as f32 / 4000.0;
            // 4000 draws: the standard error is at most 0.008, so 0.03 is over 3.5 of them.
            assert!(
                (frequency - p).abs() < 0.03,
                "class {class}: frequency {frequency}, probability {p}"
            );
        }
        assert_eq!(host(dist.mode())[0], 0.0);
    }

    #[test]
    fn actor_outputs_bounded_distributions_and_raw_actions_inside_the_box() {
        let device = wm_backend::test_device();
        device.seed(1);
        let spec = ActionSpec::Continuous {
            low: vec![-2.0],
            high: vec![2.0],
        };
        let actor = Actor::new(3, &[16], &spec, BOUNDS, &device);
        let features = Tensor::<2>::random([64, 3], Distribution::Normal(0.0, 10.0), &device);
        let PolicyDist::Normal { mean, std } = actor.forward(features.clone()) else {
            panic!("a continuous actor gives a Normal")
        };
        // tanh saturates to exactly 1.0 in f32 for large inputs (libtorch rounds there), so the
        // bound is inclusive.
        let mean = host(mean);
        assert!(mean.iter().all(|m| m.abs() <= 1.0), "{mean:?}");
        assert!(host(std).iter().all(|s| (0.1..=1.0).contains(s)));
        let raw = host(actor.to_raw(actor.forward(features).sample().mul_scalar(10.0)));
        assert!(raw.iter().all(|a| (-2.0..=2.0).contains(a)), "{raw:?}");

        let discrete = Actor::new(3, &[16], &ActionSpec::Discrete { n: 2 }, BOUNDS, &device);
        let PolicyDist::Categorical { log_probs } =
            discrete.forward(Tensor::zeros([5, 3], &device))
        else {
            panic!("categorical")
        };
        let p = host(log_probs.exp());
        assert!(
            p.iter().all(|&p| p >= 0.005 - 1e-6),
            "the uniform mixture keeps every class possible: {p:?}"
        );
    }
}
