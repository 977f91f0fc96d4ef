#![warn(missing_docs)]
//! One-step world models `p(s', r, done | s, a)` trained by (variational) maximum likelihood.
//!
//! Four models share one interface, [`TransitionModel`]:
//!
//! | config | model | `p(s' | s, a)` | role |
//! |--------|-------|----------------|------|
//! | [`CvaeConfig`] | [`Cvae`] | conditional VAE: `∫ p(s' | s, a, z) p(z | s, a) dz` | multimodal dynamics |
//! | [`GaussianMlpConfig`] | [`GaussianMlp`] | one diagonal Gaussian | distribution baseline |
//! | [`DeterministicMlpConfig`] | [`DeterministicMlp`] | point prediction (MSE) | expectation baseline |
//! | [`EnsembleConfig`] | [`ProbabilisticEnsemble`] | `(1/M) sum_m N(mu_m, sigma_m^2)`, `M` bootstrapped Gaussian MLPs | PETS: aleatoric and epistemic uncertainty |
//!
//! All four predict the next observation, the reward and the termination probability, so a
//! planner needs nothing else.
//!
//! # Conventions shared by every model
//! - Shapes: `B` batch, `O` observation width, `A` action input width (one-hot width for a
//!   discrete action space, the action dimension for a continuous one).
//! - Inputs are standardised with the model's [`Normalizer`] (fitted on training data, stored as
//!   plain serde data in the model, *not* in the burn record: save [`TransitionModel::normalizer`]
//!   beside the record and pass it to [`TransitionModelConfig::init`] before `load_record`).
//! - A discrete action arrives as its index stored in an `f32`, shape `[B, 1]`, and is one-hot
//!   encoded; a continuous action `[B, act_dim]` is rescaled from `[low, high]` to `[-1, 1]`
//!   (dimensions with an infinite or empty range are passed through unchanged).
//! - The models predict the change `s' - s` in normalised units,
//!   `d_n = (s' - s - delta_mean) / delta_std`, and report raw units in [`Prediction`].
//! - Reward: a Gaussian in normalised reward units with a learned, softly bounded, scalar
//!   log-std (the deterministic model uses squared error instead). Termination: a Bernoulli logit
//!   trained with binary cross-entropy in its stable form.
//! - [`TransitionModel::log_likelihood`] is `ln p(s' | s, a)` of the next observation only, in
//!   raw units (the normalisation Jacobian `sum ln delta_std` is subtracted).
//! - Networks are [`mlp::Mlp`]s with SiLU activations; log standard deviations are bounded by
//!   [`dist::soft_bound_log_std`]. The ensemble batches its members' MLPs
//!   ([`ensemble::EnsembleMlp`]) and clamps its log-stds between learned bounds
//!   ([`ensemble::pets_soft_clamp`]).
//!
//! # Training
//! ```no_run
//! # use wm_models::*;
//! # use burn::tensor::Device;
//! # use burn::module::Module;
//! # use burn::optim::{AdamConfig, GradientsParams};
//! # fn batches() -> TransitionTensors { unimplemented!() }
//! let device = Device::flex().autodiff();
//! let spec = ModelSpec { obs_dim: 4, action: ActionSpec::Discrete { n: 2 } };
//! # let (obs, next_obs, rewards) = (vec![0.0; 4], vec![0.0; 4], vec![0.0]);
//! let normalizer = Normalizer::fit(&obs, &next_obs, &rewards, 4);
//! let config: TransitionModelConfig = ron::from_str("Cvae((latent_dim: 4))").unwrap();
//! let mut model = config.init(&spec, normalizer, &device);
//! let mut optim = AdamConfig::new().init();
//! for _ in 0..1000 {
//!     let loss = model.loss(&batches());
//!     let grads = GradientsParams::from_grads(loss.total.backward(), &model);
//!     model = optim.step(1e-3, model, grads);
//! }
//! let eval_model = model.valid(); // no autodiff: cheaper sampling and likelihoods
//! ```

pub mod categorical;
pub mod cvae;
pub mod deterministic;
pub mod dist;
pub mod ensemble;
pub mod gaussian;
pub mod grad;
mod heads;
pub mod mlp;
mod normalizer;
pub mod validate;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub use cvae::{Cvae, CvaeConfig, PriorKind};
pub use deterministic::{DeterministicMlp, DeterministicMlpConfig};
pub use ensemble::{EnsembleConfig, ProbabilisticEnsemble, Propagation};
pub use gaussian::{GaussianMlp, GaussianMlpConfig};
pub use heads::read_metrics;
pub use normalizer::Normalizer;
pub use validate::InvalidField;

/// The action space as the models see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ActionSpec {
    /// `n` discrete actions; the action tensor holds the index as `f32`, shape `[B, 1]`.
    Discrete {
        /// Number of actions.
        n: usize,
    },
    /// A box of continuous actions; the action tensor is `[B, low.len()]`.
    Continuous {
        /// Lower bound of each dimension.
        low: Vec<f32>,
        /// Upper bound of each dimension.
        high: Vec<f32>,
    },
}

impl ActionSpec {
    /// Per-dimension `(scale, shift)` that map a continuous action from `[low, high]` to
    /// `[-1, 1]` as `a * scale + shift` (identity where a bound is infinite); empty for
    /// discrete actions.
    pub fn unit_box_affine(&self) -> (Vec<f32>, Vec<f32>) {
        match self {
            Self::Discrete { .. } => (Vec::new(), Vec::new()),
            Self::Continuous { low, high } => low
                .iter()
                .zip(high)
                .map(|(&l, &h)| {
                    let range = h - l;
                    if range.is_finite() && range > 0.0 {
                        (2.0 / range, -1.0 - 2.0 * l / range)
                    } else {
                        (1.0, 0.0)
                    }
                })
                .unzip(),
        }
    }

    /// Width of the raw action tensor: 1 (the index) for discrete, `act_dim` for continuous.
    pub fn raw_width(&self) -> usize {
        match self {
            Self::Discrete { .. } => 1,
            Self::Continuous { low, .. } => low.len(),
        }
    }

    /// Width of the encoded action fed to the networks (`A`): `n` for discrete (one-hot),
    /// `act_dim` for continuous.
    pub fn input_width(&self) -> usize {
        match self {
            Self::Discrete { n } => *n,
            Self::Continuous { low, .. } => low.len(),
        }
    }
}

/// What a model needs to know about the environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Observation width `O`.
    pub obs_dim: usize,
    /// The action space.
    pub action: ActionSpec,
}

impl ModelSpec {
    /// Checks the widths: `O > 0`, `n > 0`, matching finite-or-infinite bounds with `low <= high`.
    pub fn validate(&self) -> Result<(), String> {
        if self.obs_dim == 0 {
            return Err("obs_dim must be positive".into());
        }
        match &self.action {
            ActionSpec::Discrete { n } if *n == 0 => Err("discrete action space with n = 0".into()),
            ActionSpec::Continuous { low, high } if low.len() != high.len() || low.is_empty() => {
                Err(format!(
                    "continuous action bounds have lengths {} and {}",
                    low.len(),
                    high.len()
                ))
            }
            ActionSpec::Continuous { low, high } if low.iter().zip(high).any(|(l, h)| l > h) => {
                Err(format!(
                    "continuous action bounds low {low:?} > high {high:?}"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A batch of transitions on a device, in raw units.
#[derive(Clone, Debug)]
pub struct TransitionTensors {
    /// Observations, `[B, O]`.
    pub obs: Tensor<2>,
    /// Raw actions: `[B, 1]` index for discrete spaces, `[B, act_dim]` for continuous ones.
    pub action: Tensor<2>,
    /// Next observations, `[B, O]`.
    pub next_obs: Tensor<2>,
    /// Rewards, `[B]`.
    pub reward: Tensor<1>,
    /// 1.0 where the episode terminated at this step (not truncated), else 0.0, `[B]`.
    pub terminated: Tensor<1>,
}

impl TransitionTensors {
    /// Builds the tensors from row-major host slices.
    ///
    /// # Shapes
    /// - `obs`, `next_obs`: `[batch * obs_dim]`
    /// - `action`: `[batch * action_width]`
    /// - `reward`, `terminated`: `[batch]`
    ///
    /// # Panics
    /// If a slice length disagrees with `batch` and the widths.
    #[allow(clippy::too_many_arguments)]
    pub fn from_host(
        obs: &[f32],
        action: &[f32],
        next_obs: &[f32],
        reward: &[f32],
        terminated: &[f32],
        batch: usize,
        obs_dim: usize,
        action_width: usize,
        device: &Device,
    ) -> Self {
        for (name, len, want) in [
            ("obs", obs.len(), batch * obs_dim),
            ("action", action.len(), batch * action_width),
            ("next_obs", next_obs.len(), batch * obs_dim),
            ("reward", reward.len(), batch),
            ("terminated", terminated.len(), batch),
        ] {
            assert_eq!(
                len, want,
                "TransitionTensors::from_host: {name} has {len} values, expected {want} (batch {batch}, obs_dim {obs_dim}, action_width {action_width})"
            );
        }
        let t2 = |v: &[f32], w: usize| {
            Tensor::<2>::from_data(TensorData::new(v.to_vec(), [batch, w]), device)
        };
        let t1 = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [batch]), device);
        Self {
            obs: t2(obs, obs_dim),
            action: t2(action, action_width),
            next_obs: t2(next_obs, obs_dim),
            reward: t1(reward),
            terminated: t1(terminated),
        }
    }

    /// Batch size `B`.
    pub fn batch_size(&self) -> usize {
        self.obs.dims()[0]
    }

    /// The same batch without autodiff tracking (see [`Tensor::without_autodiff`]).
    pub fn without_autodiff(&self) -> Self {
        Self {
            obs: self.obs.clone().without_autodiff(),
            action: self.action.clone().without_autodiff(),
            next_obs: self.next_obs.clone().without_autodiff(),
            reward: self.reward.clone().without_autodiff(),
            terminated: self.terminated.clone().without_autodiff(),
        }
    }

    /// The batch on `device`.
    pub fn to_device(&self, device: &Device) -> Self {
        Self {
            obs: self.obs.clone().to_device(device),
            action: self.action.clone().to_device(device),
            next_obs: self.next_obs.clone().to_device(device),
            reward: self.reward.clone().to_device(device),
            terminated: self.terminated.clone().to_device(device),
        }
    }
}

/// A training loss and what to log about it.
#[derive(Clone, Debug)]
pub struct LossOutput {
    /// `sum_name weights[name] * terms[name]`, shape `[1]`; call `.backward()` on it.
    pub total: Tensor<1>,
    /// Each term before weighting, shape `[1]` (batch means). Names: `recon`, `reward`,
    /// `termination`, and `kl` for the cVAE.
    pub terms: BTreeMap<String, Tensor<1>>,
    /// The weight of each term; exactly the names of `terms`.
    pub weights: BTreeMap<String, f64>,
    /// Diagnostics read back to the host (one read-back per call), e.g. `kl_raw`,
    /// `decoder_std_mean`.
    pub metrics: BTreeMap<String, f64>,
}

/// One-step predictions in raw units.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// Next observations, `[B, O]`.
    pub next_obs: Tensor<2>,
    /// Expected reward (given the sampled latent, for the cVAE), `[B]`.
    pub reward: Tensor<1>,
    /// Probability that the episode terminates, `[B]`.
    pub terminated_prob: Tensor<1>,
}

/// A one-step world model.
pub trait TransitionModel: Module + Clone + Send + Sync + core::fmt::Debug {
    /// The training loss on a batch (differentiable when the model lives on an autodiff device).
    fn loss(&self, batch: &TransitionTensors) -> LossOutput;

    /// A sample of `s'` (and the reward and termination probability that go with it).
    ///
    /// # Shapes
    /// - `obs`: `[B, O]`, `action`: `[B, raw action width]`; the prediction is `[B, O]`, `[B]`, `[B]`.
    fn sample_next(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction;

    /// A central (most likely) prediction of `s'`; see each model for which one.
    ///
    /// # Shapes
    /// As [`TransitionModel::sample_next`].
    fn mean_next(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction;

    /// `ln p(s' | s, a)` of each transition's next observation in raw units (nats), estimated
    /// with `n_samples` latent samples where the model has latents (exact otherwise). Computed
    /// without autodiff whatever the model's device.
    ///
    /// # Shapes
    /// - returns `[B]`
    fn log_likelihood(&self, batch: &TransitionTensors, n_samples: usize) -> Tensor<1>;

    /// The normaliser the model was built with.
    fn normalizer(&self) -> &Normalizer;
}

/// Any of the four models, chosen at run time; a burn [`Module`] that dispatches
/// [`TransitionModel`] to the variant.
#[derive(Module, Debug)]
pub enum AnyTransitionModel {
    /// Conditional VAE.
    Cvae(Cvae),
    /// Gaussian MLP.
    Gaussian(GaussianMlp),
    /// Deterministic MLP.
    Deterministic(DeterministicMlp),
    /// Probabilistic ensemble (PETS).
    Ensemble(ProbabilisticEnsemble),
}

macro_rules! dispatch {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            AnyTransitionModel::Cvae($m) => $e,
            AnyTransitionModel::Gaussian($m) => $e,
            AnyTransitionModel::Deterministic($m) => $e,
            AnyTransitionModel::Ensemble($m) => $e,
        }
    };
}

impl TransitionModel for AnyTransitionModel {
    fn loss(&self, batch: &TransitionTensors) -> LossOutput {
        dispatch!(self, m => m.loss(batch))
    }
    fn sample_next(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction {
        dispatch!(self, m => m.sample_next(obs, action))
    }
    fn mean_next(&self, obs: Tensor<2>, action: Tensor<2>) -> Prediction {
        dispatch!(self, m => m.mean_next(obs, action))
    }
    fn log_likelihood(&self, batch: &TransitionTensors, n_samples: usize) -> Tensor<1> {
        dispatch!(self, m => m.log_likelihood(batch, n_samples))
    }
    fn normalizer(&self) -> &Normalizer {
        dispatch!(self, m => m.normalizer())
    }
}

impl AnyTransitionModel {
    /// Sets the optimiser update the next losses belong to (the cVAE's Gumbel temperature
    /// anneal, [`Cvae::set_update`]); the other models have no schedule.
    pub fn set_update(&mut self, update: u64) {
        if let Self::Cvae(model) = self {
            model.set_update(update);
        }
    }

    /// `"cvae"`, `"gaussian_mlp"`, `"deterministic_mlp"` or `"ensemble"` (as
    /// [`TransitionModelConfig::kind`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Cvae(_) => "cvae",
            Self::Gaussian(_) => "gaussian_mlp",
            Self::Deterministic(_) => "deterministic_mlp",
            Self::Ensemble(_) => "ensemble",
        }
    }

    /// The model spec it was built for.
    pub fn spec(&self) -> &ModelSpec {
        dispatch!(self, m => m.spec())
    }

    /// The deterministic model's fitted residual standard deviation (normalised units, `[O]`),
    /// plain data that is not in the burn record; `None` for other models or before fitting.
    pub fn residual_std(&self) -> Option<&[f32]> {
        match self {
            Self::Deterministic(m) => m.residual_std(),
            _ => None,
        }
    }

    /// Sets the deterministic model's residual standard deviation (e.g. restored from a
    /// checkpoint); returns `false` and does nothing for the other models.
    pub fn set_residual_std(&mut self, std: Vec<f32>) -> bool {
        match self {
            Self::Deterministic(m) => {
                m.set_residual_std(std);
                true
            }
            _ => false,
        }
    }

    /// For the deterministic model, fits the residual standard deviation on `batches` (see
    /// [`DeterministicMlp::fit_residual_std`]) and returns it; `None` (nothing done) otherwise.
    pub fn fit_residual_std<'a>(
        &mut self,
        batches: impl IntoIterator<Item = &'a TransitionTensors>,
    ) -> Option<Vec<f32>> {
        match self {
            Self::Deterministic(m) => Some(m.fit_residual_std(batches)),
            _ => None,
        }
    }
}

/// Which model to build, with its hyper-parameters; deserialisable from RON, every field of
/// every variant has a default (`Cvae(())`, `Gaussian((hidden: [64, 64]))`,
/// `Ensemble((members: 5))`, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TransitionModelConfig {
    /// Conditional VAE.
    Cvae(CvaeConfig),
    /// Gaussian MLP.
    Gaussian(GaussianMlpConfig),
    /// Deterministic MLP.
    Deterministic(DeterministicMlpConfig),
    /// Probabilistic ensemble (PETS).
    Ensemble(EnsembleConfig),
}

impl TransitionModelConfig {
    /// Builds the model on `device` (use `device.autodiff()` to train it).
    ///
    /// # Panics
    /// If the spec, the normaliser or the config is inconsistent.
    pub fn init(
        &self,
        spec: &ModelSpec,
        normalizer: Normalizer,
        device: &Device,
    ) -> AnyTransitionModel {
        match self {
            Self::Cvae(c) => AnyTransitionModel::Cvae(c.init(spec, normalizer, device)),
            Self::Gaussian(c) => AnyTransitionModel::Gaussian(c.init(spec, normalizer, device)),
            Self::Deterministic(c) => {
                AnyTransitionModel::Deterministic(c.init(spec, normalizer, device))
            }
            Self::Ensemble(c) => AnyTransitionModel::Ensemble(c.init(spec, normalizer, device)),
        }
    }

    /// The first field out of range, its path relative to the variant's config.
    pub fn validate(&self) -> Result<(), InvalidField> {
        match self {
            Self::Cvae(c) => c.validate(),
            Self::Gaussian(c) => c.validate(),
            Self::Deterministic(c) => c.validate(),
            Self::Ensemble(c) => c.validate(),
        }
    }

    /// `"cvae"`, `"gaussian_mlp"`, `"deterministic_mlp"` or `"ensemble"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Cvae(_) => "cvae",
            Self::Gaussian(_) => "gaussian_mlp",
            Self::Deterministic(_) => "deterministic_mlp",
            Self::Ensemble(_) => "ensemble",
        }
    }
}

impl Default for TransitionModelConfig {
    fn default() -> Self {
        Self::Cvae(CvaeConfig::default())
    }
}

#[cfg(test)]
pub(crate) mod test_util;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util;

    #[test]
    fn transition_model_config_parses_partial_ron_with_defaults() {
        let c: TransitionModelConfig = ron::from_str("Cvae((latent_dim: 3, beta: 0.5))").unwrap();
        let TransitionModelConfig::Cvae(cvae) = &c else {
            panic!("{c:?}")
        };
        assert_eq!((cvae.latent_dim, cvae.beta), (3, 0.5));
        assert_eq!(cvae.hidden, CvaeConfig::default().hidden);
        assert_eq!(c.kind(), "cvae");
        let g: TransitionModelConfig = ron::from_str("Gaussian(())").unwrap();
        assert_eq!(
            g,
            TransitionModelConfig::Gaussian(GaussianMlpConfig::default())
        );
        assert_eq!(g.kind(), "gaussian_mlp");
        let d: TransitionModelConfig = ron::from_str("Deterministic((hidden: [8]))").unwrap();
        assert_eq!(d.kind(), "deterministic_mlp");
        let e: TransitionModelConfig =
            ron::from_str("Ensemble((members: 7, propagation: Ts1))").unwrap();
        let TransitionModelConfig::Ensemble(ensemble) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            (ensemble.members, ensemble.propagation),
            (7, Propagation::Ts1)
        );
        assert_eq!(ensemble.hidden, EnsembleConfig::default().hidden);
        assert_eq!(e.kind(), "ensemble");
        let p: CvaeConfig = ron::from_str("(prior: Standard)").unwrap();
        assert_eq!(p.prior, PriorKind::Standard);
        // Round trip through RON.
        let text = ron::to_string(&c).unwrap();
        assert_eq!(ron::from_str::<TransitionModelConfig>(&text).unwrap(), c);
    }

    #[test]
    fn from_host_builds_the_documented_shapes() {
        let device = wm_backend::test_device();
        let b = TransitionTensors::from_host(
            &[0.0; 6], &[1.0; 2], &[0.0; 6], &[0.0; 2], &[0.0; 2], 2, 3, 1, &device,
        );
        assert_eq!(b.obs.dims(), [2, 3], "actual {:?}", b.obs.dims());
        assert_eq!(b.action.dims(), [2, 1], "actual {:?}", b.action.dims());
        assert_eq!(b.reward.dims(), [2], "actual {:?}", b.reward.dims());
    }

    #[test]
    #[should_panic(expected = "obs has 5 values, expected 6")]
    fn from_host_rejects_a_slice_of_the_wrong_length() {
        TransitionTensors::from_host(
            &[0.0; 5],
            &[1.0; 2],
            &[0.0; 6],
            &[0.0; 2],
            &[0.0; 2],
            2,
            3,
            1,
            &wm_backend::test_device(),
        );
    }

    #[test]
    fn every_model_kind_builds_predicts_the_documented_shapes_and_round_trips_its_record() {
        let (_rng, device) = test_util::seeded_device(5);
        let spec = ModelSpec {
            obs_dim: 3,
            action: ActionSpec::Discrete { n: 4 },
        };
        let configs = [
            TransitionModelConfig::Cvae(CvaeConfig {
                hidden: vec![16],
                latent_dim: 2,
                ..Default::default()
            }),
            TransitionModelConfig::Gaussian(GaussianMlpConfig {
                hidden: vec![16],
                ..Default::default()
            }),
            TransitionModelConfig::Deterministic(DeterministicMlpConfig {
                hidden: vec![16],
                ..Default::default()
            }),
            TransitionModelConfig::Ensemble(EnsembleConfig {
                members: 3,
                hidden: vec![16],
                ..Default::default()
            }),
        ];
        let batch = test_util::random_batch(&spec, 5, &device);
        for config in configs {
            let model = config.init(&spec, Normalizer::identity(3), &device);
            assert_eq!(model.kind(), config.kind());
            for p in [
                model.sample_next(batch.obs.clone(), batch.action.clone()),
                model.mean_next(batch.obs.clone(), batch.action.clone()),
            ] {
                assert_eq!(
                    p.next_obs.dims(),
                    [5, 3],
                    "{}: next_obs shape {:?}",
                    model.kind(),
                    p.next_obs.dims()
                );
                assert_eq!(
                    p.reward.dims(),
                    [5],
                    "{}: reward shape {:?}",
                    model.kind(),
                    p.reward.dims()
                );
                assert_eq!(
                    p.terminated_prob.dims(),
                    [5],
                    "{}: prob shape {:?}",
                    model.kind(),
                    p.terminated_prob.dims()
                );
            }
            let ll = model.log_likelihood(&batch, 3);
            assert_eq!(
                ll.dims(),
                [5],
                "{}: log-likelihood shape {:?}",
                model.kind(),
                ll.dims()
            );
            let loss = model.loss(&batch);
            assert_eq!(
                loss.total.dims(),
                [1],
                "{}: total shape {:?}",
                model.kind(),
                loss.total.dims()
            );
            assert!(loss.total.clone().into_scalar::<f32>().is_finite());

            // Record round trip into a freshly initialised model gives identical outputs.
            let expected = model
                .mean_next(batch.obs.clone(), batch.action.clone())
                .next_obs
                .into_data();
            let record = model.clone().into_record();
            device.seed(99);
            let fresh = config
                .init(&spec, Normalizer::identity(3), &device)
                .load_record(record);
            let got = fresh
                .mean_next(batch.obs.clone(), batch.action.clone())
                .next_obs
                .into_data();
            assert_eq!(
                got.try_to_vec::<f32>().unwrap(),
                expected.try_to_vec::<f32>().unwrap(),
                "{}",
                model.kind()
            );
        }
    }

    #[test]
    fn every_model_takes_an_optimiser_step_with_discrete_actions_on_an_autodiff_device() {
        use burn::optim::{AdamConfig, GradientsParams};
        let (_rng, plain) = test_util::seeded_device(6);
        let device = plain.autodiff();
        let spec = ModelSpec {
            obs_dim: 2,
            action: ActionSpec::Discrete { n: 3 },
        };
        let batch = test_util::random_batch(&spec, 8, &device);
        for config in [
            TransitionModelConfig::Cvae(CvaeConfig {
                hidden: vec![8],
                ..Default::default()
            }),
            TransitionModelConfig::Gaussian(GaussianMlpConfig {
                hidden: vec![8],
                ..Default::default()
            }),
            TransitionModelConfig::Deterministic(DeterministicMlpConfig {
                hidden: vec![8],
                ..Default::default()
            }),
            TransitionModelConfig::Ensemble(EnsembleConfig {
                members: 2,
                hidden: vec![8],
                ..Default::default()
            }),
        ] {
            let mut model = config.init(&spec, Normalizer::identity(2), &device);
            let before = model.loss(&batch).total.into_scalar::<f32>();
            let mut optim = AdamConfig::new().init();
            for _ in 0..5 {
                let grads =
                    GradientsParams::from_grads(model.loss(&batch).total.backward(), &model);
                assert!(!grads.is_empty(), "{}: no gradients", model.kind());
                model = optim.step(1e-2, model, grads);
            }
            let after = model
                .valid()
                .loss(&batch.without_autodiff())
                .total
                .into_scalar::<f32>();
            assert!(
                after.is_finite() && before.is_finite(),
                "{}: loss {before} -> {after}",
                model.kind()
            );

            // Residual std: only the deterministic model has one.
            let is_det = model.kind() == "deterministic_mlp";
            assert_eq!(model.fit_residual_std([&batch]).is_some(), is_det);
            assert_eq!(model.residual_std().is_some(), is_det);
            assert_eq!(model.set_residual_std(vec![0.5, 0.5]), is_det);
        }
    }
}
