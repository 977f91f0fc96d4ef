//! The learner's state (model, optimiser, actor-critic, sampling RNG, counters), built fresh or
//! restored from a run's checkpoint, and written back into one checkpoint file.

use burn::module::Module;
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wm_agent::{ActorCritic, AgentBytes};
use wm_backend::Device;
use wm_models::{ModelSpec, Normalizer};

use crate::checkpoint::{AgentRecords, Checkpoint, CheckpointMeta, RngState};
use crate::config::{CollectPolicy, TrainConfig};
use crate::error::TrainError;
use crate::model::{AnyModel, TrainableModel, parameters_finite};
use crate::run::RunFolder;

/// A model, its optimiser, the sampling RNG and the actor-critic when the acting policy is the
/// actor: what a checkpoint restores.
pub struct Learner {
    /// The world model, on the autodiff device.
    pub model: AnyModel,
    /// Its optimiser.
    pub optimizer: ModuleOptimizer,
    /// The batch sampler.
    pub rng: ChaCha8Rng,
    /// Optimiser updates done (skipped non-finite ones included).
    pub update: u64,
    /// Updates skipped because their loss or gradient norm was not finite.
    pub nonfinite_updates: u64,
    /// The actor-critic (`data.policy: Actor(..)`).
    pub agent: Option<ActorCritic>,
}

fn run_error(run: &RunFolder) -> impl Fn(String) -> TrainError + '_ {
    move |message| TrainError::Run {
        run: run.dir.clone(),
        message,
    }
}

impl Learner {
    /// A new learner for `config` on `device` (an autodiff device), seeded from the config.
    pub fn fresh(
        config: &TrainConfig,
        spec: &ModelSpec,
        normalizer: Normalizer,
        device: &Device,
    ) -> Self {
        device.seed(config.seed);
        let model = config.model.init(spec, normalizer, device);
        let agent = match &config.data.policy {
            CollectPolicy::Actor(agent) => Some(ActorCritic::new(
                agent,
                model.feature_dim(),
                &spec.action,
                device,
            )),
            _ => None,
        };
        let optimizer = AdamConfig::new().with_epsilon(config.optim.eps).init();
        Self {
            model,
            optimizer,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            update: 0,
            nonfinite_updates: 0,
            agent,
        }
    }

    /// The learner saved in `checkpoint`, for `config` (whose model must fit the saved
    /// parameters), on `device` (an autodiff device).
    pub fn restore(
        config: &TrainConfig,
        checkpoint: &Checkpoint,
        device: &Device,
        run: &RunFolder,
    ) -> Result<Self, TrainError> {
        let fail = run_error(run);
        // The device RNG (reparameterisation noise) cannot be saved; reseeding it from the
        // update count keeps a resumed run reproducible, though not identical to an
        // uninterrupted one.
        device.seed(config.seed ^ checkpoint.meta.update.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let model = restore_model(config, checkpoint, device, run)?;
        let optimizer = AdamConfig::new()
            .with_epsilon(config.optim.eps)
            .init()
            .from_bytes(Bytes::from_bytes_vec(checkpoint.optimizer_bytes.clone()))
            .map_err(|error| fail(format!("the optimiser state is unreadable: {error:?}")))?;
        let rng = checkpoint
            .meta
            .rng
            .restore()
            .ok_or_else(|| fail("the checkpoint's RNG state is unreadable".into()))?;
        let agent = restore_agent(config, checkpoint, &model, device, run)?;
        Ok(Self {
            model,
            optimizer,
            rng,
            update: checkpoint.meta.update,
            nonfinite_updates: checkpoint.meta.nonfinite_updates,
            agent,
        })
    }

    /// Whether the model's and the actor-critic's weights are all finite.
    pub fn weights_finite(&self) -> bool {
        self.model.parameters_finite()
            && self
                .agent
                .as_ref()
                .is_none_or(|agent| parameters_finite(&agent.nets))
    }

    /// Writes the learner's checkpoint into `run` (one file, atomically), after checking that
    /// every weight is finite: a NaN never reaches a checkpoint.
    pub fn save(
        &self,
        run: &RunFolder,
        config: &TrainConfig,
        env_steps: u64,
    ) -> Result<(), TrainError> {
        let fail = run_error(run);
        if !self.weights_finite() {
            return Err(TrainError::NonFiniteWeights {
                update: self.update,
            });
        }
        let (agent_state, agent) = match &self.agent {
            Some(agent) => {
                let bytes = agent
                    .to_bytes()
                    .map_err(|e| fail(format!("serialising the actor-critic: {e}")))?;
                let state = serde_json::from_str(&bytes.state)
                    .map_err(|e| fail(format!("the actor-critic's state is not JSON: {e}")))?;
                (
                    Some(state),
                    AgentRecords {
                        nets: bytes.nets,
                        optimizer: bytes.optimizer,
                    },
                )
            }
            None => (None, AgentRecords::default()),
        };
        let model_bytes = self
            .model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| fail(format!("serialising the model: {e:?}")))?;
        let optimizer_bytes = self
            .optimizer
            .into_bytes()
            .map_err(|e| fail(format!("serialising the optimiser: {e:?}")))?;
        let checkpoint = Checkpoint {
            meta: CheckpointMeta {
                update: self.update,
                env_steps,
                nonfinite_updates: self.nonfinite_updates,
                model_kind: self.model.kind().to_string(),
                config_ron: config.to_ron(),
                model_state: self.model.host_state(),
                rng: RngState::of(&self.rng),
                agent_state,
                writer_version: env!("CARGO_PKG_VERSION").to_string(),
            },
            model_bytes: model_bytes.to_vec(),
            optimizer_bytes: optimizer_bytes.to_vec(),
            agent,
        };
        checkpoint.save_atomic(&run.checkpoint())?;
        Ok(())
    }
}

/// The actor-critic saved in `checkpoint` (`None` when `config` acts without one), for `model`'s
/// features, on `device` (autodiff to train it, plain to act with it).
///
/// # Errors
/// [`TrainError::Run`] when the config and the checkpoint disagree on whether there is an
/// actor-critic, or the saved networks do not fit `data.policy`.
pub fn restore_agent(
    config: &TrainConfig,
    checkpoint: &Checkpoint,
    model: &AnyModel,
    device: &Device,
    run: &RunFolder,
) -> Result<Option<ActorCritic>, TrainError> {
    let fail = run_error(run);
    match (&config.data.policy, &checkpoint.meta.agent_state) {
        (CollectPolicy::Actor(agent_config), Some(state)) => {
            let bytes = AgentBytes {
                nets: checkpoint.agent.nets.clone(),
                optimizer: checkpoint.agent.optimizer.clone(),
                state: state.to_string(),
            };
            let agent = ActorCritic::from_bytes(
                agent_config,
                model.feature_dim(),
                TrainableModel::action_spec(model),
                device,
                &bytes,
            )
            .map_err(|error| {
                fail(format!(
                    "the checkpoint's actor-critic does not fit data.policy: {error}"
                ))
            })?;
            Ok(Some(agent))
        }
        (CollectPolicy::Actor(_), None) => Err(fail(
            "config.ron acts with an actor but the checkpoint holds no actor-critic".into(),
        )),
        (_, Some(_)) => Err(fail(
            "the checkpoint holds an actor-critic but config.ron acts without one".into(),
        )),
        (_, None) => Ok(None),
    }
}

/// The model saved in `checkpoint`, built from `config` on `device`.
///
/// # Errors
/// [`TrainError::Run`] when the checkpoint holds another kind of model, or parameters whose
/// shapes do not fit the configured model (e.g. other hidden widths).
pub fn restore_model(
    config: &TrainConfig,
    checkpoint: &Checkpoint,
    device: &Device,
    run: &RunFolder,
) -> Result<AnyModel, TrainError> {
    let fail = run_error(run);
    if checkpoint.meta.model_kind != config.model.kind() {
        return Err(fail(format!(
            "the checkpoint holds a {} model but config.ron configures a {}",
            checkpoint.meta.model_kind,
            config.model.kind()
        )));
    }
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(checkpoint.model_bytes.clone()))
        .map_err(|error| {
            fail(format!(
                "the checkpoint's model record is unreadable: {error:?}"
            ))
        })?;
    let mut model = AnyModel::from_state(&config.model, &checkpoint.meta.model_state, device)
        .try_load_record(record)
        .map_err(|error| {
            fail(format!(
                "the checkpoint's parameters do not fit the configured model: {error:?}"
            ))
        })?;
    model.set_fitted_state(&checkpoint.meta.model_state);
    Ok(model)
}
