#![warn(missing_docs)]
//! Model-predictive control over the imagination API of `wm_imagine`: at every real step a
//! [`Planner`] searches action sequences of horizon `H` in a [`WorldModel`] and returns the first
//! action of the best plan found; the rest of the plan warm-starts the next search.
//!
//! # The planners
//! - [`RandomShooting`]: `N` sequences drawn uniformly (in the action box, or uniform classes);
//!   act with the first action of the one with the highest predicted return. Memoryless.
//! - [`Cem`], the cross-entropy method (PlaNet, Hafner et al. 2019): a distribution per time
//!   step, a Gaussian clipped to the action box (`N(mean, std)` in normalised units, where the
//!   box is `[-1, 1]`) or, for discrete actions, a categorical. Each iteration samples `N`
//!   sequences, scores them all in **one** batched [`WorldModel::discounted_returns`] call
//!   (the start state is [`WorldModel::repeat`]ed `N` times; one model step of all `N`
//!   candidates per horizon step, without decoding observations), keeps the `K` best (the elites) and refits
//!   the distribution to them: the elites' mean and std (floored at `min_std`), or their
//!   action frequencies per time step with additive smoothing,
//!   `p_c = (count_c + smoothing) / (K + n * smoothing)`. The action is the first step of the
//!   final mean (the most likely class for discrete actions).
//! - [`Mppi`], model-predictive path integral control as in TD-MPC2 (Hansen et al. 2024): the
//!   same sampling, but the elites are weighted by `exp(temperature * (return - max return))`
//!   and the mean and std (and the class frequencies) are weighted averages; std floored at
//!   `min_std`. The action is the first step of the final mean (TD-MPC2's evaluation mode).
//!
//! CEM and MPPI are **warm-started**: a plan starts from the previous plan's mean shifted by
//! one step (its first step has been executed), with the last step re-initialised (mean 0 =
//! the box centre, or uniform classes) and the std reset to 1 (half the box) everywhere.
//! [`Planner::reset`] forgets the previous plan; call it at the start of each episode.
//!
//! The predicted return of a sequence is
//! `sum_t discount^t * reward_t * prod_{i < t} continue_prob_i` over the model's predicted
//! rewards and continue probabilities ([`sequence_returns`], which is
//! [`Rollout::discounted_return`](wm_imagine::Rollout::discounted_return)): the reward of the
//! step that terminates still counts, later ones do not. Planners imagine with `sample: false`
//! (the model's central prediction).
//!
//! # Defaults
//! [`PlannerConfig`] holds the numbers; a field left out of a config file takes the default of
//! the config's `kind`:
//!
//! | kind | horizon | candidates | elites | iterations | temperature | min_std | discount | smoothing |
//! |------|---------|------------|--------|------------|-------------|---------|----------|-----------|
//! | `Cem` (PlaNet) | 12 | 1000 | 100 | 10 | – | 0.05 | 0.99 | 1.0 |
//! | `Mppi` (TD-MPC2) | 12 | 512 | 64 | 6 | 0.5 | 0.05 | 0.99 | 1.0 |
//! | `RandomShooting` | 12 | 1000 | – | – | – | – | 0.99 | – |
//!
//! `min_std` is in normalised units (a fraction of half the box). The temperature multiplies
//! raw returns, so it depends on the reward scale.
//!
//! # Reproducibility
//! Every planner draws its candidates on the host from its own ChaCha8 stream, seeded at
//! construction: the same seed, model and observations give the same actions (the device RNG
//! is never used).
//!
//! # Checking a planner without learning
//! [`TrueDynamics`] is a [`WorldModel`] that steps the real CartPole or Pendulum physics, so a
//! planner can be tested on its own:
//! ```
//! use burn::tensor::{Device, Tensor, TensorData};
//! use wm_envs::{Env, Pendulum};
//! use wm_imagine::{Context, WorldModel};
//! use wm_plan::{Planner, PlannerConfig, TrueDynamics};
//!
//! let device = Device::flex();
//! let model = TrueDynamics::pendulum();
//! let config = PlannerConfig { candidates: 64, iterations: 2, elites: 8, ..PlannerConfig::cem() };
//! let mut planner = config.init(model.action_spec(), 0);
//! let mut env = Pendulum::new();
//! let obs = env.reset(Some(0));
//! planner.reset();
//! let context = Context::new(Tensor::from_data(TensorData::new(obs, [1, 3]), &device));
//! let action = planner.plan_one(&model, &context);
//! env.step(&action)?;
//! # Ok::<(), wm_envs::EnvError>(())
//! ```

mod search;
mod true_dynamics;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use wm_envs::Action;
use wm_imagine::{Context, WorldModel};
use wm_models::ActionSpec;
use wm_models::validate::{self, InvalidField};

pub use search::{Cem, Mppi, RandomShooting};
pub use true_dynamics::TrueDynamics;

/// A model-predictive controller: plans in a [`WorldModel`] from the current real context and
/// returns the actions to take now.
///
/// The method is generic over the model, so the trait is not object-safe; [`AnyPlanner`] is
/// the run-time choice among the planners of this crate.
pub trait Planner {
    /// Plans for every row of the model state `start` independently (each row has its own plan
    /// and warm start) and returns one action per row, in row order: `Action::Discrete(index)`
    /// or `Action::Continuous(raw values)` inside the model's action space. An agent that
    /// carries its model state through the episode (filtering each real step with
    /// [`WorldModel::observe_step`]) plans from it with this.
    ///
    /// # Shapes
    /// - `start`: batch `B`; returns `B` actions. All rows' candidates of one iteration are
    ///   scored together by one [`WorldModel::discounted_returns`] of batch `B * candidates`:
    ///   one model step of the whole batch per horizon step.
    ///
    /// # Panics
    /// If the model's action space is not the one the planner was built for.
    fn plan_from<M: WorldModel>(&mut self, model: &M, start: &M::State) -> Vec<Action>;

    /// [`Planner::plan_from`] the state [`WorldModel::start`] filters from `context` (the
    /// posterior mode for the RSSM).
    ///
    /// # Shapes
    /// - `context`: batch `B`; returns `B` actions
    ///
    /// # Panics
    /// If the model's action space is not the one the planner was built for.
    fn plan<M: WorldModel>(&mut self, model: &M, context: &Context) -> Vec<Action> {
        self.plan_from(model, &model.start(context, false))
    }

    /// Forgets the previous plan (the warm start); call it at the start of an episode.
    fn reset(&mut self);

    /// [`Planner::plan`] for a context of batch 1.
    ///
    /// # Panics
    /// If the context's batch size is not 1.
    fn plan_one<M: WorldModel>(&mut self, model: &M, context: &Context) -> Action {
        assert_eq!(
            context.batch_size(),
            1,
            "plan_one needs a context of batch 1"
        );
        self.plan(model, context).pop().expect("one action per row")
    }
}

/// The predicted return of each action sequence from `start`:
/// `sum_t discount^t * reward_t * prod_{i < t} continue_prob_i`, from one
/// [`WorldModel::discounted_returns`] call (the central prediction, `sample: false`; the
/// observations are not predicted). The reward of a step that reaches a terminal state still
/// counts; the rewards after it are weighted by the continue probability.
///
/// # Shapes
/// - `start`: batch `B`; `actions`: `[B, H, A]` raw actions; returns `[B]`
pub fn sequence_returns<M: WorldModel>(
    model: &M,
    start: &M::State,
    actions: Tensor<3>,
    discount: f32,
) -> Tensor<1> {
    model.discounted_returns(start, actions, discount)
}

/// Which planner a [`PlannerConfig`] builds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlannerKind {
    /// [`RandomShooting`].
    RandomShooting,
    /// [`Cem`].
    #[default]
    Cem,
    /// [`Mppi`].
    Mppi,
}

/// The settings of a planner. [`Default`] is [`PlannerConfig::cem`].
///
/// Deserialising is strict (unknown fields are errors) and a missing field takes the default
/// of the config's `kind` (see the crate docs' table), so `(kind: Mppi)` is TD-MPC2's MPPI and
/// `(kind: Cem, horizon: 20)` PlaNet's CEM with a longer horizon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "PlannerConfigFile")]
pub struct PlannerConfig {
    /// The planner.
    pub kind: PlannerKind,
    /// Horizon `H` of the action sequences.
    pub horizon: usize,
    /// Sequences `N` scored per iteration (and per row).
    pub candidates: usize,
    /// Elites `K` the distribution is refitted to (CEM, MPPI).
    pub elites: usize,
    /// Refits per decision (CEM, MPPI).
    pub iterations: usize,
    /// MPPI's inverse temperature: elite weights `exp(temperature * (return - max))`.
    pub temperature: f32,
    /// Floor of the refitted std, in normalised units (CEM, MPPI; continuous actions).
    pub min_std: f32,
    /// Discount of the predicted rewards.
    pub discount: f32,
    /// Additive smoothing of the refitted class probabilities (CEM, MPPI; discrete actions).
    pub smoothing: f32,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self::cem()
    }
}

impl PlannerConfig {
    /// PlaNet's CEM: horizon 12, 1000 candidates, 100 elites, 10 iterations.
    pub fn cem() -> Self {
        Self {
            kind: PlannerKind::Cem,
            horizon: 12,
            candidates: 1000,
            elites: 100,
            iterations: 10,
            temperature: 0.5,
            min_std: 0.05,
            discount: 0.99,
            smoothing: 1.0,
        }
    }

    /// TD-MPC2's MPPI: horizon 12 (TD-MPC2 uses 3 with a value function), 512 candidates, 64
    /// elites, 6 iterations, temperature 0.5, min std 0.05.
    pub fn mppi() -> Self {
        Self {
            kind: PlannerKind::Mppi,
            candidates: 512,
            elites: 64,
            iterations: 6,
            ..Self::cem()
        }
    }

    /// Random shooting: 1000 sequences of horizon 12.
    pub fn random_shooting() -> Self {
        Self {
            kind: PlannerKind::RandomShooting,
            iterations: 1,
            ..Self::cem()
        }
    }

    /// The defaults of a kind.
    pub fn defaults(kind: PlannerKind) -> Self {
        match kind {
            PlannerKind::RandomShooting => Self::random_shooting(),
            PlannerKind::Cem => Self::cem(),
            PlannerKind::Mppi => Self::mppi(),
        }
    }

    /// The first field out of range: `horizon` and `iterations` in `1..=1000`, `candidates`
    /// in `1..=MAX_WIDTH`, `elites` in `1..=candidates` (CEM, MPPI), `temperature` in `(0, 1e6]`, `min_std`
    /// in `[0, 10]`, `discount` in `(0, 1]` and `smoothing` in `[0, 1e6]`.
    pub fn validate(&self) -> Result<(), InvalidField> {
        validate::count("horizon", self.horizon, 1000)?;
        validate::count("candidates", self.candidates, validate::MAX_WIDTH)?;
        validate::count("iterations", self.iterations, 1000)?;
        // Random shooting keeps no elites, so its `elites` is not read.
        if self.kind != PlannerKind::RandomShooting
            && (self.elites == 0 || self.elites > self.candidates)
        {
            return Err(InvalidField::new(
                "elites",
                format!(
                    "must be between 1 and candidates ({}), got {}",
                    self.candidates, self.elites
                ),
            ));
        }
        validate::positive("temperature", f64::from(self.temperature))?;
        validate::within("temperature", f64::from(self.temperature), 0.0, 1e6)?;
        validate::within("min_std", f64::from(self.min_std), 0.0, 10.0)?;
        if !(self.discount > 0.0 && self.discount <= 1.0) {
            return Err(InvalidField::new(
                "discount",
                format!("must be in (0, 1], got {}", self.discount),
            ));
        }
        validate::within("smoothing", f64::from(self.smoothing), 0.0, 1e6)
    }

    /// The planner of this config's `kind` for `action_spec`, with its own ChaCha8 stream
    /// seeded with `seed`.
    ///
    /// # Panics
    /// If the config does not pass [`PlannerConfig::validate`] (the trainer validates every
    /// config before it starts a worker) or the action box is empty or infinite.
    pub fn init(&self, action_spec: &ActionSpec, seed: u64) -> AnyPlanner {
        match self.kind {
            PlannerKind::RandomShooting => {
                AnyPlanner::RandomShooting(RandomShooting::new(action_spec, self, seed))
            }
            PlannerKind::Cem => AnyPlanner::Cem(Cem::new(action_spec, self, seed)),
            PlannerKind::Mppi => AnyPlanner::Mppi(Mppi::new(action_spec, self, seed)),
        }
    }
}

/// [`PlannerConfig`] as written in a file: every field optional, defaulting per kind.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PlannerConfigFile {
    kind: PlannerKind,
    horizon: Option<usize>,
    candidates: Option<usize>,
    elites: Option<usize>,
    iterations: Option<usize>,
    temperature: Option<f32>,
    min_std: Option<f32>,
    discount: Option<f32>,
    smoothing: Option<f32>,
}

impl From<PlannerConfigFile> for PlannerConfig {
    fn from(file: PlannerConfigFile) -> Self {
        let d = PlannerConfig::defaults(file.kind);
        Self {
            kind: file.kind,
            horizon: file.horizon.unwrap_or(d.horizon),
            candidates: file.candidates.unwrap_or(d.candidates),
            elites: file.elites.unwrap_or(d.elites),
            iterations: file.iterations.unwrap_or(d.iterations),
            temperature: file.temperature.unwrap_or(d.temperature),
            min_std: file.min_std.unwrap_or(d.min_std),
            discount: file.discount.unwrap_or(d.discount),
            smoothing: file.smoothing.unwrap_or(d.smoothing),
        }
    }
}

/// One of the planners of this crate, chosen at run time ([`PlannerConfig::init`]).
#[derive(Clone, Debug)]
pub enum AnyPlanner {
    /// [`RandomShooting`].
    RandomShooting(RandomShooting),
    /// [`Cem`].
    Cem(Cem),
    /// [`Mppi`].
    Mppi(Mppi),
}

impl Planner for AnyPlanner {
    fn plan_from<M: WorldModel>(&mut self, model: &M, start: &M::State) -> Vec<Action> {
        match self {
            Self::RandomShooting(p) => p.plan_from(model, start),
            Self::Cem(p) => p.plan_from(model, start),
            Self::Mppi(p) => p.plan_from(model, start),
        }
    }

    fn reset(&mut self) {
        match self {
            Self::RandomShooting(p) => p.reset(),
            Self::Cem(p) => p.reset(),
            Self::Mppi(p) => p.reset(),
        }
    }
}

#[cfg(test)]
mod tests;
