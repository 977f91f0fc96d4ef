//! The actor-critic learner: imagine from replayed start states with the current policy, then
//! one gradient step on the actor (REINFORCE with normalised advantages and an entropy bonus)
//! and the critic (two-hot cross-entropy to the lambda-returns, regularised towards a slow
//! copy of itself).

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor};
use serde::{Deserialize, Serialize};
use wm_imagine::{ImagineActions, WorldModel};
use wm_models::ActionSpec;
use wm_models::grad::clip_global_norm;
use wm_models::mlp::{Mlp, MlpConfig};
use wm_models::validate::{self, InvalidField};

use crate::policy::{Actor, PolicyBounds};
use crate::returns::{ReturnNormalizer, discount_weights, lambda_returns};
use crate::twohot::TwoHot;

/// Settings of the actor-critic, as written in a config file: `Actor((horizon: 15, ..))`;
/// every field has a default (DreamerV3's where it has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorCriticConfig {
    /// Hidden widths of the actor and of the critic (SiLU).
    pub hidden: Vec<usize>,
    /// Imagination horizon `H` (15).
    pub horizon: usize,
    /// Discount `gamma` (0.99).
    pub discount: f32,
    /// `lambda` of the returns (0.95).
    pub lambda: f32,
    /// Weight of the policy entropy in the actor loss (3e-4).
    pub entropy: f32,
    /// Adam's learning rate, for both networks.
    pub lr: f64,
    /// Adam's epsilon (1e-5).
    pub eps: f32,
    /// Global gradient-norm clip, applied to each network separately (100).
    pub grad_clip: f32,
    /// The slow critic follows the critic as `slow = decay * slow + (1 - decay) * critic` after
    /// every update (0.98).
    pub slow_critic_decay: f32,
    /// Weight of the critic's cross-entropy towards the slow critic's values (1).
    pub slow_critic_weight: f32,
    /// Decay of the moving averages of the return percentiles (0.99).
    pub return_norm_decay: f32,
    /// Smallest standard deviation of continuous actions, in unit-box units (0.1).
    pub min_std: f32,
    /// Largest standard deviation (1.0).
    pub max_std: f32,
    /// Uniform mixture of the categorical policy (0.01).
    pub unimix: f32,
    /// Imagine with samples of the world model (`true`, as Dreamer) or with its central
    /// prediction.
    pub sample_model: bool,
    /// Start states per update (replayed states, each imagined `horizon` steps): the trainer
    /// samples about this many (256; DreamerV3 uses 1024 on a GPU).
    pub starts: usize,
}

impl Default for ActorCriticConfig {
    fn default() -> Self {
        Self {
            hidden: vec![128, 128],
            horizon: 15,
            discount: 0.99,
            lambda: 0.95,
            entropy: 3e-4,
            lr: 1e-4,
            eps: 1e-5,
            grad_clip: 100.0,
            slow_critic_decay: 0.98,
            slow_critic_weight: 1.0,
            return_norm_decay: 0.99,
            min_std: 0.1,
            max_std: 1.0,
            unimix: 0.01,
            sample_model: true,
            starts: 256,
        }
    }
}

impl ActorCriticConfig {
    /// The first field out of range (its path relative to this config): widths and `starts`
    /// in `1..=MAX_WIDTH`, `horizon` in `1..=1000`, the discount, lambda, decays and unimix in
    /// `[0, 1]`, `lr` in `(0, 1]`, `0 < min_std <= max_std <= 10`, `entropy` and
    /// `slow_critic_weight` in `[0, 1e6]`, `grad_clip` and `eps` positive and finite.
    pub fn validate(&self) -> Result<(), InvalidField> {
        validate::widths("hidden", &self.hidden)?;
        validate::count("horizon", self.horizon, 1000)?;
        for (field, value) in [
            ("discount", self.discount),
            ("lambda", self.lambda),
            ("slow_critic_decay", self.slow_critic_decay),
            ("return_norm_decay", self.return_norm_decay),
            ("unimix", self.unimix),
        ] {
            validate::within(field, f64::from(value), 0.0, 1.0)?;
        }
        validate::positive("lr", self.lr)?;
        validate::within("lr", self.lr, 0.0, 1.0)?;
        validate::positive("min_std", f64::from(self.min_std))?;
        if !(self.max_std.is_finite() && self.max_std <= 10.0 && self.min_std <= self.max_std) {
            return Err(InvalidField::new(
                "max_std",
                format!(
                    "must be finite, at most 10 and at least min_std ({}), got {}",
                    self.min_std, self.max_std
                ),
            ));
        }
        validate::within("entropy", f64::from(self.entropy), 0.0, 1e6)?;
        validate::within(
            "slow_critic_weight",
            f64::from(self.slow_critic_weight),
            0.0,
            1e6,
        )?;
        validate::positive("grad_clip", f64::from(self.grad_clip))?;
        validate::positive("eps", f64::from(self.eps))?;
        validate::count("starts", self.starts, validate::MAX_WIDTH)
    }

    fn bounds(&self) -> PolicyBounds {
        PolicyBounds {
            min_std: self.min_std,
            max_std: self.max_std,
            unimix: self.unimix,
        }
    }
}

/// The critic: features to logits over the two-hot bins; the output layer starts at zero, so
/// the first values are exactly 0 (DreamerV3).
#[derive(Module, Debug)]
pub struct Critic {
    /// `features -> logits [K]`.
    pub net: Mlp,
}

impl Critic {
    fn new(feature_dim: usize, hidden: &[usize], bins: usize, device: &Device) -> Self {
        let mut net = MlpConfig::new(feature_dim, hidden.to_vec(), bins).init(device);
        if let Some(last) = net.layers.last_mut() {
            let [i, o] = last.weight.dims();
            *last = Linear {
                weight: Param::from_tensor(Tensor::zeros([i, o], device)),
                bias: Some(Param::from_tensor(Tensor::zeros([o], device))),
            };
        }
        Self { net }
    }

    /// Logits over the bins.
    ///
    /// # Shapes
    /// - `features`: `[N, F]`; returns `[N, K]`
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        self.net.forward(features)
    }
}

/// The trained networks, one module so that one record holds them.
#[derive(Module, Debug)]
pub struct AgentNets {
    /// The policy.
    pub actor: Actor,
    /// The value network being trained.
    pub critic: Critic,
    /// The exponential moving average of the critic (never trained by gradients).
    pub slow_critic: Critic,
}

/// A batch of imagined trajectories, time-major (row `t * B + b`).
struct ImaginedBatch {
    /// Features of states `0..=H`, `[(H + 1) B, F]`.
    features: Tensor<2>,
    /// Actions taken in states `0..H`, policy form, `[H B, 1 or A]`.
    actions: Tensor<2>,
    /// `[B, H]`.
    reward: Tensor<2>,
    /// `[B, H]`.
    cont: Tensor<2>,
}

/// An actor-critic as bytes, for a checkpoint: the networks' record, the optimiser's record
/// (both burnpack, backend-independent) and the host-side state.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentBytes {
    /// [`AgentNets`] record.
    pub nets: Vec<u8>,
    /// Adam's state.
    pub optimizer: Vec<u8>,
    /// [`AgentState`] as JSON.
    pub state: String,
}

/// The actor-critic's host-side state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// The return normaliser's moving averages.
    pub return_norm: ReturnNormalizer,
    /// Updates done.
    pub updates: u64,
}

/// Why an actor-critic could not be restored from [`AgentBytes`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A record or the state does not decode, or does not fit the configured networks.
    #[error("the actor-critic's {part} is unreadable or does not fit the config: {message}")]
    Record {
        /// `networks`, `optimiser` or `state`.
        part: &'static str,
        /// What burn or serde said.
        message: String,
    },
}

/// The actor-critic and its optimiser state: see the crate docs.
pub struct ActorCritic {
    /// The networks, on the learner's (autodiff) device.
    pub nets: AgentNets,
    /// The return normaliser's moving averages.
    pub return_norm: ReturnNormalizer,
    optimizer: ModuleOptimizer,
    config: ActorCriticConfig,
    twohot: TwoHot,
    updates: u64,
}

impl ActorCritic {
    /// A new actor-critic for a world model with `feature_dim` features and this action space,
    /// on `device` (give an autodiff device to train).
    ///
    /// # Panics
    /// If the config does not pass [`ActorCriticConfig::validate`] (the trainer validates
    /// every config before building).
    pub fn new(
        config: &ActorCriticConfig,
        feature_dim: usize,
        action: &ActionSpec,
        device: &Device,
    ) -> Self {
        if let Err(invalid) = config.validate() {
            panic!("actor-critic config: {invalid}");
        }
        let twohot = TwoHot::default();
        let actor = Actor::new(feature_dim, &config.hidden, action, config.bounds(), device);
        let critic = Critic::new(feature_dim, &config.hidden, twohot.bins, device);
        let slow_critic = critic.clone();
        Self {
            nets: AgentNets {
                actor,
                critic,
                slow_critic,
            },
            return_norm: ReturnNormalizer::new(config.return_norm_decay),
            optimizer: AdamConfig::new().with_epsilon(config.eps).init(),
            config: config.clone(),
            twohot,
            updates: 0,
        }
    }

    /// Serialises the networks, the optimiser and the host-side state.
    ///
    /// # Errors
    /// [`AgentError::Record`] if burn cannot serialise a record.
    pub fn to_bytes(&self) -> Result<AgentBytes, AgentError> {
        let nets = self
            .nets
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|error| AgentError::Record {
                part: "networks",
                message: format!("{error:?}"),
            })?
            .to_vec();
        let optimizer = self
            .optimizer
            .into_bytes()
            .map_err(|error| AgentError::Record {
                part: "optimiser",
                message: format!("{error:?}"),
            })?
            .to_vec();
        let state = AgentState {
            return_norm: self.return_norm.clone(),
            updates: self.updates,
        };
        Ok(AgentBytes {
            nets,
            optimizer,
            state: serde_json::to_string(&state).expect("the agent state serialises"),
        })
    }

    /// Restores an actor-critic saved by [`ActorCritic::to_bytes`] onto `device`, for a world
    /// model with `feature_dim` features and this action space.
    ///
    /// # Errors
    /// [`AgentError::Record`] if a part does not decode or does not fit `config`.
    pub fn from_bytes(
        config: &ActorCriticConfig,
        feature_dim: usize,
        action: &ActionSpec,
        device: &Device,
        bytes: &AgentBytes,
    ) -> Result<Self, AgentError> {
        let mut agent = Self::new(config, feature_dim, action, device);
        let fail = |part: &'static str| move |message: String| AgentError::Record { part, message };
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.nets.clone()))
            .map_err(|e| fail("networks")(format!("{e:?}")))?;
        agent.nets = agent
            .nets
            .try_load_record(record)
            .map_err(|e| fail("networks")(format!("{e:?}")))?;
        agent.optimizer = AdamConfig::new()
            .with_epsilon(config.eps)
            .init()
            .from_bytes(Bytes::from_bytes_vec(bytes.optimizer.clone()))
            .map_err(|e| fail("optimiser")(format!("{e:?}")))?;
        let state: AgentState =
            serde_json::from_str(&bytes.state).map_err(|e| fail("state")(e.to_string()))?;
        agent.return_norm = state.return_norm;
        agent.updates = state.updates;
        Ok(agent)
    }

    /// The config.
    pub fn config(&self) -> &ActorCriticConfig {
        &self.config
    }

    /// Updates done.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The policy without autodiff, for acting.
    pub fn policy(&self) -> Actor {
        self.nets.actor.valid()
    }

    /// The critic's value of states given by their features (no gradient).
    ///
    /// # Shapes
    /// - `features`: `[N, F]`; returns `[N]`
    pub fn value(&self, features: Tensor<2>) -> Tensor<1> {
        self.twohot
            .mean(self.nets.critic.valid().forward(features.inner()))
    }

    /// Rolls the policy out in `model` for `horizon` steps from `starts` (no gradients), through
    /// the one imagination loop ([`WorldModel::imagine`] with a policy): the policy closure
    /// records the features it reads and the actions it draws.
    fn imagine<M: WorldModel>(&self, model: &M, starts: &M::State) -> ImaginedBatch {
        let actor = self.policy();
        let horizon = self.config.horizon;
        let (mut features, mut actions) =
            (Vec::with_capacity(horizon + 1), Vec::with_capacity(horizon));
        let mut policy = |state: &M::State, _obs: &Tensor<2>| {
            let f = model.features(state).inner().detach();
            let action = actor.forward(f.clone()).sample();
            features.push(f);
            actions.push(action.clone());
            actor.to_raw(action)
        };
        let rollout = model.imagine(
            starts,
            ImagineActions::Policy {
                horizon,
                policy: &mut policy,
            },
            self.config.sample_model,
        );
        features.push(model.features(&rollout.last).inner().detach());
        ImaginedBatch {
            features: Tensor::cat(features, 0),
            actions: Tensor::cat(actions, 0),
            reward: rollout.reward.inner().detach(),
            cont: rollout.continue_prob.inner().detach(),
        }
    }

    /// One update from imagined rollouts of `model` starting at `starts` (replayed states:
    /// [`WorldModel::start_every_step`] of a replayed batch). Returns named metrics: `actor_loss`,
    /// `critic_loss`, `entropy`, `return_mean`, `return_scale`, `value_mean`,
    /// `imagined_reward_mean`, `advantage_std`, `actor_grad_norm`, `critic_grad_norm`.
    ///
    /// The world model is only run forward: the actor is trained with REINFORCE gradients
    /// (DreamerV3), so no gradient flows into the model, which may live on a device without
    /// autodiff.
    pub fn update<M: WorldModel>(&mut self, model: &M, starts: &M::State) -> BTreeMap<String, f64> {
        let b = model.batch_size(starts);
        let h = self.config.horizon;
        let (gamma, lambda) = (self.config.discount, self.config.lambda);
        let traj = self.imagine(model, starts);

        // Values of states 0..=H, the returns and the weights: constants of the losses.
        let value = self
            .value(traj.features.clone())
            .reshape([h + 1, b])
            .swap_dims(0, 1);
        let returns = lambda_returns(
            traj.reward.clone(),
            traj.cont.clone(),
            value.clone(),
            gamma,
            lambda,
        );
        let weights = discount_weights(traj.cont.clone(), gamma);
        let host = |x: Tensor<2>| x.into_data().try_to_vec::<f32>().expect("f32 tensors");
        self.return_norm.update(&host(returns.clone()));
        let scale = self.return_norm.scale();
        let time_major = |x: Tensor<2>| x.swap_dims(0, 1).reshape([h * b]);
        let advantage =
            time_major((returns.clone() - value.clone().narrow(1, 0, h)).div_scalar(scale));
        let returns_t = time_major(returns.clone());
        let weights_t = time_major(weights);
        let states = traj.features.clone().narrow(0, 0, h * b);
        let slow_value = self
            .twohot
            .mean(self.nets.slow_critic.valid().forward(states.clone()));

        // The losses, on the learner's device.
        let to_learner = |x: Tensor<1>| x.autodiff();
        let (advantage, returns_t, weights_t, slow_value) = (
            to_learner(advantage),
            to_learner(returns_t),
            to_learner(weights_t),
            to_learner(slow_value),
        );
        let states = states.autodiff();
        let policy = self.nets.actor.forward(states.clone());
        let log_prob = policy.log_prob(traj.actions.clone().autodiff());
        let entropy = policy.entropy();
        let actor_loss = ((log_prob * advantage.clone()
            + entropy.clone().mul_scalar(self.config.entropy))
            * weights_t.clone())
        .mean()
        .neg();
        let logits = self.nets.critic.forward(states);
        let critic_loss = ((self.twohot.loss(logits.clone(), returns_t)
            + self
                .twohot
                .loss(logits, slow_value)
                .mul_scalar(self.config.slow_critic_weight))
            * weights_t)
            .mean();

        let mut grads = GradientsParams::from_grads(
            (actor_loss.clone() + critic_loss.clone()).backward(),
            &self.nets,
        );
        let actor_grad_norm = clip_global_norm(&self.nets.actor, &mut grads, self.config.grad_clip);
        let critic_grad_norm =
            clip_global_norm(&self.nets.critic, &mut grads, self.config.grad_clip);
        let mut nets = self
            .optimizer
            .step(self.config.lr, self.nets.clone(), grads);
        nets.slow_critic = ema(
            &nets.slow_critic,
            &nets.critic,
            self.config.slow_critic_decay,
        );
        self.nets = nets;
        self.updates += 1;

        let scalar = |x: Tensor<1>| f64::from(x.into_scalar::<f32>());
        let mut metrics = BTreeMap::new();
        metrics.insert("actor_loss".into(), scalar(actor_loss));
        metrics.insert("critic_loss".into(), scalar(critic_loss));
        metrics.insert("entropy".into(), scalar(entropy.mean()));
        metrics.insert("return_mean".into(), scalar(returns.mean().reshape([1])));
        metrics.insert("return_scale".into(), f64::from(scale));
        metrics.insert("value_mean".into(), scalar(value.mean().reshape([1])));
        metrics.insert(
            "imagined_reward_mean".into(),
            scalar(traj.reward.mean().reshape([1])),
        );
        let adv = advantage.inner();
        metrics.insert(
            "advantage_std".into(),
            scalar((adv.clone() - adv.clone().mean()).square().mean().sqrt()),
        );
        metrics.insert("actor_grad_norm".into(), f64::from(actor_grad_norm));
        metrics.insert("critic_grad_norm".into(), f64::from(critic_grad_norm));
        metrics
    }
}

/// `decay * slow + (1 - decay) * fast`, parameter by parameter, without gradients.
fn ema(slow: &Critic, fast: &Critic, decay: f32) -> Critic {
    let mix = |s: Tensor<2>, f: Tensor<2>| {
        s.inner().mul_scalar(decay) + f.inner().mul_scalar(1.0 - decay)
    };
    let mix1 = |s: Tensor<1>, f: Tensor<1>| {
        s.inner().mul_scalar(decay) + f.inner().mul_scalar(1.0 - decay)
    };
    let layers = slow
        .net
        .layers
        .iter()
        .zip(&fast.net.layers)
        .map(|(s, f)| {
            let device = s.weight.val().device();
            let to = |x: Tensor<2>| {
                if device.is_autodiff() {
                    x.autodiff()
                } else {
                    x
                }
            };
            let to1 = |x: Tensor<1>| {
                if device.is_autodiff() {
                    x.autodiff()
                } else {
                    x
                }
            };
            Linear {
                weight: Param::from_tensor(to(mix(s.weight.val(), f.weight.val()))),
                bias: match (&s.bias, &f.bias) {
                    (Some(sb), Some(fb)) => Some(Param::from_tensor(to1(mix1(sb.val(), fb.val())))),
                    _ => None,
                },
            }
        })
        .collect();
    Critic {
        net: Mlp { layers },
    }
}
