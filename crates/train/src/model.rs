//! The models the trainer can train, their configs, and [`TrainableModel`]: the one interface
//! the trainer sees. A trainable model says which batch it wants (transitions or sequences),
//! gives its loss as named terms, its host-side checkpoint state, the width of the features a
//! policy reads, an actor-critic update from replayed start states, and hands its
//! [`WorldModel`] to generic code ([`WithWorldModel`]). The one-step models and the RSSM
//! implement it; [`AnyModel`] implements it once by delegation, and is the only place outside
//! construction from a config that matches on the model kind.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use wm_agent::ActorCritic;
use wm_imagine::{Context, WorldModel};
use wm_models::{
    ActionSpec, AnyTransitionModel, CvaeConfig, DeterministicMlpConfig, EnsembleConfig,
    GaussianMlpConfig, LossOutput, ModelSpec, Normalizer, TransitionModel, TransitionModelConfig,
    TransitionTensors,
};
use wm_rssm::{LatentConfig, Rssm, RssmConfig, SequenceTensors};

/// A model config as written in `configs/*.ron`: `model: Cvae((..))`, `Gaussian((..))`,
/// `Deterministic((..))`, `Ensemble((..))` or `Rssm((..))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelConfig {
    /// Conditional VAE of one transition.
    Cvae(CvaeConfig),
    /// Gaussian MLP (distribution baseline).
    Gaussian(GaussianMlpConfig),
    /// Deterministic MLP (expectation baseline).
    Deterministic(DeterministicMlpConfig),
    /// Probabilistic ensemble of Gaussian MLPs (PETS).
    Ensemble(EnsembleConfig),
    /// Recurrent state-space model, trained on sequences.
    Rssm(RssmConfig),
}

impl ModelConfig {
    /// The name used in run folders and reports: `cvae`, `gaussian_mlp`, `deterministic_mlp`,
    /// `ensemble`, `rssm_gaussian` or `rssm_categorical`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rssm(config) => rssm_kind(&config.latent),
            other => other
                .transition()
                .expect("non-RSSM configs are transition models")
                .kind(),
        }
    }

    /// The one-step model's config, `None` for the RSSM.
    pub fn transition(&self) -> Option<TransitionModelConfig> {
        match self {
            Self::Cvae(c) => Some(TransitionModelConfig::Cvae(c.clone())),
            Self::Gaussian(c) => Some(TransitionModelConfig::Gaussian(c.clone())),
            Self::Deterministic(c) => Some(TransitionModelConfig::Deterministic(c.clone())),
            Self::Ensemble(c) => Some(TransitionModelConfig::Ensemble(c.clone())),
            Self::Rssm(_) => None,
        }
    }

    /// The first field out of range, its path relative to the model config with the variant
    /// left out (`latent_dim`, `latent.size`).
    pub fn validate(&self) -> Result<(), wm_models::InvalidField> {
        match self {
            Self::Rssm(config) => config.validate(),
            other => other
                .transition()
                .expect("non-RSSM configs are transition models")
                .validate(),
        }
    }

    /// Whether the model trains on sequences (the RSSM) rather than transitions.
    pub fn is_sequence_model(&self) -> bool {
        matches!(self, Self::Rssm(_))
    }

    /// Builds the model on `device`. The normaliser is used by the one-step models only (the RSSM
    /// squashes its inputs and targets with symlog instead).
    pub fn init(
        &self,
        spec: &ModelSpec,
        normalizer: Normalizer,
        device: &wm_backend::Device,
    ) -> AnyModel {
        match self {
            Self::Rssm(config) => AnyModel::Rssm(config.init(spec, device)),
            other => AnyModel::Transition(
                other
                    .transition()
                    .expect("checked")
                    .init(spec, normalizer, device),
            ),
        }
    }
}

fn rssm_kind(latent: &LatentConfig) -> &'static str {
    match latent {
        LatentConfig::Gaussian { .. } => "rssm_gaussian",
        LatentConfig::Categorical { .. } => "rssm_categorical",
    }
}

/// A model being trained or evaluated.
#[derive(Module, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a handful of values per process (one per model or worker), never stored in bulk"
)]
pub enum AnyModel {
    /// cVAE, one of the MLP baselines, or the ensemble.
    Transition(AnyTransitionModel),
    /// The recurrent state-space model.
    Rssm(Rssm),
}

impl AnyModel {
    /// See [`ModelConfig::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transition(model) => model.kind(),
            Self::Rssm(model) => rssm_kind(&model.config().latent),
        }
    }

    /// The one-step model, if this is one.
    pub fn as_transition(&self) -> Option<&AnyTransitionModel> {
        match self {
            Self::Transition(model) => Some(model),
            Self::Rssm(_) => None,
        }
    }
}

/// Which batch a model trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Independent transitions `(s, a, r, s', done)` (the one-step models).
    Transitions,
    /// Fixed-length sequences in the replay's sequence layout (the RSSM).
    Sequences,
}

/// A batch on a device, of either kind.
#[derive(Debug, Clone)]
pub enum Batch {
    /// Transitions.
    Transitions(TransitionTensors),
    /// Sequences.
    Sequences(SequenceTensors),
}

impl Batch {
    /// The batch's kind.
    pub fn kind(&self) -> BatchKind {
        match self {
            Self::Transitions(_) => BatchKind::Transitions,
            Self::Sequences(_) => BatchKind::Sequences,
        }
    }
}

/// The host-side state a model keeps beside its parameters (saved in the checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelState {
    /// A one-step model: its spec, the normaliser fitted to the data and, for the expectation
    /// model, the residual standard deviation fitted after training.
    Transition {
        /// Observation width and action space.
        spec: ModelSpec,
        /// Normalisation statistics.
        normalizer: Normalizer,
        /// The fitted residual std (deterministic MLP), if fitted.
        residual_std: Option<Vec<f32>>,
    },
    /// The RSSM: only its spec (it squashes with symlog instead of a normaliser).
    Rssm {
        /// Observation width and action space.
        spec: ModelSpec,
    },
}

impl ModelState {
    /// The spec the model was built for.
    pub fn spec(&self) -> &ModelSpec {
        match self {
            Self::Transition { spec, .. } | Self::Rssm { spec } => spec,
        }
    }
}

/// A computation written once for any [`WorldModel`], run on the world model inside a
/// [`TrainableModel`] by [`TrainableModel::with_world_model`] (planners, the actor, evaluation).
pub trait WithWorldModel {
    /// What the computation returns.
    type Output;
    /// Runs on `model`.
    fn run<M: WorldModel>(self, model: &M) -> Self::Output;
}

/// What the trainer needs of a world model.
pub trait TrainableModel: Module + Clone + Send + core::fmt::Debug {
    /// The batch [`loss`](Self::loss) wants.
    fn batch_kind(&self) -> BatchKind;

    /// The loss on `batch` as named unweighted terms, their weights and the weighted total.
    ///
    /// # Panics
    /// If the batch is not of [`batch_kind`](Self::batch_kind) (the trainer samples by it).
    fn loss(&self, batch: &Batch) -> LossOutput;

    /// Sets the optimiser update the next losses belong to, for models with a schedule in
    /// their loss (the cVAE's Gumbel temperature anneal). The trainer calls it before every
    /// update; by default nothing.
    fn set_update(&mut self, _update: u64) {}

    /// The host-side state to checkpoint beside the parameters.
    fn host_state(&self) -> ModelState;

    /// The action space the model was built for.
    fn action_spec(&self) -> &ActionSpec;

    /// Runs `computation` on the model's [`WorldModel`] (imagination).
    fn with_world_model<V: WithWorldModel>(&self, computation: V) -> V::Output;

    /// Width of the features a policy reads from the model's states.
    fn feature_dim(&self) -> usize {
        struct FeatureDim;
        impl WithWorldModel for FeatureDim {
            type Output = usize;
            fn run<M: WorldModel>(self, model: &M) -> usize {
                model.feature_dim()
            }
        }
        self.with_world_model(FeatureDim)
    }

    /// One actor-critic update imagined from the start states of a replayed `batch` of
    /// [`batch_kind`](Self::batch_kind): every observation of a transition batch, every
    /// posterior state of a sequence batch. Returns the agent's metrics.
    ///
    /// # Panics
    /// If the batch is not of [`batch_kind`](Self::batch_kind).
    fn update_agent(&self, agent: &mut ActorCritic, batch: &Batch) -> BTreeMap<String, f64>;

    /// Gradient norms per part of the model (before clipping), a diagnostic the trainer logs
    /// as `train/grad_norm_{part}` at its log schedule; one host read per part. None by default.
    fn grad_norms_by_module(&self, _grads: &GradientsParams) -> Vec<(&'static str, f32)> {
        Vec::new()
    }
}

fn wrong_batch(model: &str, want: BatchKind, got: &Batch) -> ! {
    panic!(
        "a {model} trains on {want:?} but was given {:?}: the trainer samples by batch_kind()",
        got.kind()
    )
}

impl TrainableModel for AnyTransitionModel {
    fn batch_kind(&self) -> BatchKind {
        BatchKind::Transitions
    }

    fn loss(&self, batch: &Batch) -> LossOutput {
        match batch {
            Batch::Transitions(batch) => TransitionModel::loss(self, batch),
            other => wrong_batch(self.kind(), BatchKind::Transitions, other),
        }
    }

    fn set_update(&mut self, update: u64) {
        AnyTransitionModel::set_update(self, update);
    }

    fn host_state(&self) -> ModelState {
        ModelState::Transition {
            spec: self.spec().clone(),
            normalizer: self.normalizer().clone(),
            residual_std: self.residual_std().map(<[f32]>::to_vec),
        }
    }

    fn action_spec(&self) -> &ActionSpec {
        &self.spec().action
    }

    fn with_world_model<V: WithWorldModel>(&self, computation: V) -> V::Output {
        computation.run(self)
    }

    fn update_agent(&self, agent: &mut ActorCritic, batch: &Batch) -> BTreeMap<String, f64> {
        match batch {
            Batch::Transitions(batch) => {
                agent.update(self, &self.start(&Context::new(batch.obs.clone()), true))
            }
            other => wrong_batch(self.kind(), BatchKind::Transitions, other),
        }
    }
}

impl TrainableModel for Rssm {
    fn batch_kind(&self) -> BatchKind {
        BatchKind::Sequences
    }

    fn loss(&self, batch: &Batch) -> LossOutput {
        match batch {
            Batch::Sequences(batch) => Rssm::loss(self, batch),
            other => wrong_batch("RSSM", BatchKind::Sequences, other),
        }
    }

    fn host_state(&self) -> ModelState {
        let spec = self.spec();
        ModelState::Rssm {
            spec: ModelSpec {
                obs_dim: spec.obs_dim,
                action: spec.action.clone(),
            },
        }
    }

    fn action_spec(&self) -> &ActionSpec {
        &self.spec().action
    }

    fn with_world_model<V: WithWorldModel>(&self, computation: V) -> V::Output {
        computation.run(self)
    }

    fn update_agent(&self, agent: &mut ActorCritic, batch: &Batch) -> BTreeMap<String, f64> {
        match batch {
            Batch::Sequences(batch) => {
                // Dreamer starts from every posterior state of the batch.
                let states = self.start_every_step(&Context::from_sequences(batch), true);
                agent.update(self, &states)
            }
            other => wrong_batch("RSSM", BatchKind::Sequences, other),
        }
    }

    fn grad_norms_by_module(&self, grads: &GradientsParams) -> Vec<(&'static str, f32)> {
        wm_rssm::module_grad_norms(self, grads)
    }
}

impl TrainableModel for AnyModel {
    fn batch_kind(&self) -> BatchKind {
        match self {
            Self::Transition(model) => model.batch_kind(),
            Self::Rssm(model) => model.batch_kind(),
        }
    }

    fn loss(&self, batch: &Batch) -> LossOutput {
        match self {
            Self::Transition(model) => TrainableModel::loss(model, batch),
            Self::Rssm(model) => TrainableModel::loss(model, batch),
        }
    }

    fn set_update(&mut self, update: u64) {
        match self {
            Self::Transition(model) => TrainableModel::set_update(model, update),
            Self::Rssm(model) => TrainableModel::set_update(model, update),
        }
    }

    fn host_state(&self) -> ModelState {
        match self {
            Self::Transition(model) => model.host_state(),
            Self::Rssm(model) => model.host_state(),
        }
    }

    fn action_spec(&self) -> &ActionSpec {
        match self {
            Self::Transition(model) => TrainableModel::action_spec(model),
            Self::Rssm(model) => TrainableModel::action_spec(model),
        }
    }

    fn with_world_model<V: WithWorldModel>(&self, computation: V) -> V::Output {
        match self {
            Self::Transition(model) => computation.run(model),
            Self::Rssm(model) => computation.run(model),
        }
    }

    fn update_agent(&self, agent: &mut ActorCritic, batch: &Batch) -> BTreeMap<String, f64> {
        match self {
            Self::Transition(model) => model.update_agent(agent, batch),
            Self::Rssm(model) => model.update_agent(agent, batch),
        }
    }

    fn grad_norms_by_module(&self, grads: &GradientsParams) -> Vec<(&'static str, f32)> {
        match self {
            Self::Transition(model) => model.grad_norms_by_module(grads),
            Self::Rssm(model) => model.grad_norms_by_module(grads),
        }
    }
}

impl AnyModel {
    /// The model `config` describes, for the spec and normaliser of its host-side `state`, on
    /// `device`, with fresh parameters: load a record into it, then
    /// [`set_fitted_state`](Self::set_fitted_state), to restore a saved model.
    pub fn from_state(
        config: &ModelConfig,
        state: &ModelState,
        device: &wm_backend::Device,
    ) -> Self {
        match state {
            ModelState::Transition {
                spec, normalizer, ..
            } => config.init(spec, normalizer.clone(), device),
            ModelState::Rssm { spec } => {
                config.init(spec, Normalizer::identity(spec.obs_dim), device)
            }
        }
    }

    /// Restores what `state` holds that was fitted after training (the expectation model's
    /// residual std).
    pub fn set_fitted_state(&mut self, state: &ModelState) {
        if let (
            ModelState::Transition {
                residual_std: Some(std),
                ..
            },
            Self::Transition(model),
        ) = (state, self)
        {
            model.set_residual_std(std.clone());
        }
    }

    /// After training: fits what the model fits on the training data once its parameters are
    /// final (the expectation model's residual variance, for its likelihood); the other
    /// models have nothing to fit. `batches` are transitions on a plain device.
    pub fn fit_after_training<'a>(&mut self, batches: impl Iterator<Item = &'a TransitionTensors>) {
        if let Self::Transition(model) = self
            && let Some(std) = model.valid().fit_residual_std(batches)
        {
            model.set_residual_std(std);
        }
    }

    /// Whether every parameter is finite (checked before a checkpoint is written).
    pub fn parameters_finite(&self) -> bool {
        parameters_finite(self)
    }
}

/// Whether every float parameter of `module` is finite.
pub fn parameters_finite<M: Module>(module: &M) -> bool {
    struct Finite(bool);
    impl burn::module::ModuleVisitor for Finite {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if self.0 {
                self.0 = param.val().is_finite().all().into_scalar::<bool>();
            }
        }
    }
    let mut visitor = Finite(true);
    module.visit(&mut visitor);
    visitor.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Param, ParamId};
    use burn::tensor::TensorData;
    use wm_models::DeterministicMlpConfig;

    fn spec() -> ModelSpec {
        ModelSpec {
            obs_dim: 2,
            action: ActionSpec::Discrete { n: 2 },
        }
    }

    #[test]
    fn one_step_models_train_on_transitions_and_the_rssm_on_sequences() {
        let device = wm_backend::test_device();
        let mlp = ModelConfig::Deterministic(DeterministicMlpConfig {
            hidden: vec![4],
            ..Default::default()
        });
        let rssm = ModelConfig::Rssm(RssmConfig {
            deter: 4,
            hidden: 4,
            latent: LatentConfig::Gaussian {
                size: 2,
                min_std: 0.1,
            },
            encoder_hidden: vec![4],
            decoder_hidden: vec![4],
            head_hidden: vec![4],
            ..Default::default()
        });
        let one_step = mlp.init(&spec(), Normalizer::identity(2), &device);
        let sequence = rssm.init(&spec(), Normalizer::identity(2), &device);
        assert_eq!(
            (one_step.batch_kind(), sequence.batch_kind()),
            (BatchKind::Transitions, BatchKind::Sequences)
        );
        assert_eq!(TrainableModel::action_spec(&one_step), &spec().action);
        assert_eq!(TrainableModel::feature_dim(&one_step), 2);
        assert_eq!(
            TrainableModel::feature_dim(&sequence),
            4 + 2,
            "features are [deter, stoch]"
        );
        assert_eq!(one_step.host_state().spec(), &spec());
        // The host state restores the same kind of model.
        let again = AnyModel::from_state(&rssm, &sequence.host_state(), &device);
        assert_eq!(again.kind(), "rssm_gaussian");
    }

    #[test]
    fn a_nan_parameter_is_found() {
        let device = wm_backend::test_device();
        let config = ModelConfig::Deterministic(DeterministicMlpConfig {
            hidden: vec![3],
            ..Default::default()
        });
        let model = config.init(&spec(), Normalizer::identity(2), &device);
        assert!(model.parameters_finite());
        let mut poisoned = Param::initialized(
            ParamId::new(),
            Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0], [2]), &device),
        );
        assert!(parameters_finite(&poisoned));
        poisoned = Param::initialized(
            ParamId::new(),
            Tensor::<1>::from_data(TensorData::new(vec![1.0f32, f32::NAN], [2]), &device),
        );
        assert!(!parameters_finite(&poisoned));
    }
}
