#![warn(missing_docs)]
//! Imagination for planners and policy learners: one [`WorldModel`] trait over every world
//! model of the workspace, and a batched model environment, [`ModelEnv`], so that a planner
//! never touches model internals.
//!
//! | model | [`WorldModel::State`] | [`WorldModel::start`] from a [`Context`] |
//! |-------|-----------------------|------------------------------------------|
//! | [`Cvae`](wm_models::Cvae), [`GaussianMlp`](wm_models::GaussianMlp), [`DeterministicMlp`](wm_models::DeterministicMlp) | the observation `[B, O]` | the current observation (the history is ignored) |
//! | [`AnyTransitionModel`](wm_models::AnyTransitionModel), [`ProbabilisticEnsemble`](wm_models::ProbabilisticEnsemble) | [`OneStepState`]: the observation `[B, O]` and, for a TS-∞ ensemble, each row's member `[B]` (drawn at the first sampled step) | the current observation, no member (the history is ignored) |
//! | [`Rssm`](wm_rssm::Rssm) | [`RssmState`](wm_rssm::RssmState) `(h [B, D], z [B, S])` | the posterior after observing the history (or the current observation alone) |
//!
//! A model is stepped in batches: [`WorldModel::step`] takes a state of batch `B` and raw actions
//! `[B, A]` and returns the next state and a [`StepPrediction`] (observation, reward and continue
//! probability in raw units). [`WorldModel::imagine`] rolls out `H` steps from a fixed action
//! sequence or a policy closure; [`WorldModel::repeat`] tiles each start state `N` times so that
//! `N` candidate action sequences can be scored in one batch.
//!
//! [`ModelEnv`] wraps a model as an environment with a batch dimension: `reset` from real
//! observations (one call), then `step` with a batch of actions. It keeps the latent state; the
//! planner sees observations, rewards and continue probabilities only.
//!
//! # Conventions
//! - Shapes: `B` batch, `H` horizon, `T` history length, `O` observation width, `A` raw action
//!   width ([`ActionSpec::raw_width`]: 1 for a discrete index stored as `f32`, `act_dim` for a box).
//! - Everything is in raw (environment) units. The continue probability is
//!   `P(the state reached is not terminal)` = `1 - terminated_prob` for the one-step models.
//! - `sample: false` gives the central prediction (the one-step model's `mean_next`, the RSSM's
//!   prior and posterior modes), which is deterministic; `sample: true` draws from the model
//!   with the device RNG, so seeding the device ([`Device::seed`](burn::tensor::Device::seed))
//!   reproduces a rollout.
//! - Nothing here reads tensors back to the host except [`ModelEnv::step`] (for
//!   [`ModelStep::done`]).
//!
//! # Plugging in a planner
//! A random-shooting planner over [`ModelEnv`], generic over the model: evaluate `N` random
//! action sequences of horizon `H` from the current observation, return the first action of the
//! best one. (`examples/custom_planner.rs` in the workspace runs this against the real
//! Pendulum.)
//! ```
//! use burn::tensor::{Distribution, Tensor};
//! use wm_imagine::{Context, ModelEnv, WorldModel};
//!
//! /// The first action of the best of `n` random sequences (continuous actions in `[low, high]`).
//! fn plan<M: WorldModel>(env: &mut ModelEnv<M>, obs: Tensor<2>, n: usize, horizon: usize,
//!                        low: f64, high: f64) -> Tensor<2> {
//!     let device = obs.device();
//!     env.reset_repeated(Context::new(obs), n); // one start state, n copies
//!     let mut first = None;
//!     let mut total = Tensor::<1>::zeros([n], &device);
//!     let mut alive = Tensor::<1>::ones([n], &device);
//!     for _ in 0..horizon {
//!         let action = Tensor::<2>::random([n, 1], Distribution::Uniform(low, high), &device);
//!         first.get_or_insert_with(|| action.clone());
//!         let step = env.step(action);
//!         total = total + step.reward * alive.clone();
//!         alive = alive * step.continue_prob;
//!     }
//!     let best = total.argmax(0); // [1]
//!     first.unwrap().select(0, best) // [1, 1]
//! }
//!
//! # use wm_models::{ActionSpec, GaussianMlpConfig, ModelSpec, Normalizer, TransitionModelConfig};
//! # let device = burn::tensor::Device::flex();
//! # let spec = ModelSpec { obs_dim: 3, action: ActionSpec::Continuous { low: vec![-2.0], high: vec![2.0] } };
//! # let model = TransitionModelConfig::Gaussian(GaussianMlpConfig { hidden: vec![8], ..Default::default() })
//! #     .init(&spec, Normalizer::identity(3), &device);
//! let mut env = ModelEnv::new(model, false);
//! let obs = Tensor::<2>::from_floats([[1.0, 0.0, 0.0]], &device);
//! let action = plan(&mut env, obs, 64, 10, -2.0, 2.0);
//! assert_eq!(action.dims(), [1, 1]);
//! ```
//!
//! In an agent loop, carry the model state through the episode: [`WorldModel::start`] from the
//! first observation, then [`WorldModel::observe_step`] once per real step (the RSSM's posterior
//! update; one-step models take the new observation), and plan or act from that state
//! (`wm_plan::Planner::plan_from`). This is what the rollout workers of `wm-train` do. The
//! simpler [`HistoryWindow`] re-filters the last few real steps at every decision instead
//! (`T` filter steps per action, and a memory of `T` steps).
//!
//! Every rollout goes through one loop, [`WorldModel::imagine`] ([`imagine_by_steps`]):
//! fixed sequences, a policy closure, and the planners' [`WorldModel::discounted_returns`]
//! (the same loop, skipping the observations a planner does not read).
//!
//! A policy learner uses the trait directly: [`WorldModel::start`] from replayed sequences
//! ([`Context::from_sequences`]), then [`WorldModel::imagine`] with
//! [`ImagineActions::Policy`]; the rollout is differentiable when the model lives on an
//! autodiff device.
//!
//! Note: [`Rssm`](wm_rssm::Rssm) has an inherent `imagine` with other arguments, which wins
//! method resolution on a concrete `Rssm`; call the trait's as `WorldModel::imagine(&rssm, ..)`
//! (inside code generic over `M: WorldModel` there is no ambiguity).

mod env;
mod one_step;
mod rssm;
mod window;

use burn::tensor::{Device, Int, Tensor, TensorData};
use wm_models::ActionSpec;

pub use env::{ModelEnv, ModelStep};
pub use one_step::OneStepState;
pub use window::HistoryWindow;

/// The real data imagination starts from: the current observations and, optionally, the short
/// history that led to them (which the RSSM filters into its posterior state; one-step models
/// use the current observation only).
///
/// `Context::new(obs)` (or `obs.into()`) is enough to "reset from real observations".
#[derive(Clone, Debug)]
pub struct Context {
    obs: Tensor<2>,
    history: Option<History>,
}

/// A short history of real steps, batch-major, replay-aligned (as `wm_rssm::SequenceTensors`):
/// `action[b, t]` is the action that led to `obs[b, t]` (ignored where `is_first[b, t]`); the
/// last step `t = T - 1` is the current observation.
#[derive(Clone, Debug)]
pub struct History {
    /// `[B, T, O]`.
    pub obs: Tensor<3>,
    /// `[B, T, A]`.
    pub action: Tensor<3>,
    /// `[B, T]`, 1.0 at the first observation of an episode.
    pub is_first: Tensor<2>,
}

impl Context {
    /// Starts from observations alone (for the RSSM: as the first observation of an episode).
    ///
    /// # Shapes
    /// - `obs`: `[B, O]`
    pub fn new(obs: Tensor<2>) -> Self {
        Self { obs, history: None }
    }

    /// Starts from a history whose last step is the current observation.
    ///
    /// # Shapes
    /// - `obs`: `[B, T, O]`, `action`: `[B, T, A]`, `is_first`: `[B, T]`, with `T >= 1`
    ///
    /// # Panics
    /// If the batch sizes or lengths disagree, or `T = 0`.
    pub fn with_history(obs: Tensor<3>, action: Tensor<3>, is_first: Tensor<2>) -> Self {
        let [b, t, o] = obs.dims();
        let [ab, at, _] = action.dims();
        assert!(
            t > 0 && ab == b && at == t && is_first.dims() == [b, t],
            "history shapes obs {:?}, action {:?}, is_first {:?}; expected [B, T, O], [B, T, A], [B, T] with T > 0",
            obs.dims(),
            action.dims(),
            is_first.dims()
        );
        let current = obs.clone().narrow(1, t - 1, 1).reshape([b, o]);
        Self {
            obs: current,
            history: Some(History {
                obs,
                action,
                is_first,
            }),
        }
    }

    /// Starts from replayed sequences (their rewards and terminals are not used); imagination
    /// starts after the last step of each sequence.
    ///
    /// # Shapes
    /// - `batch`: `[B, T, ..]`; the context has batch `B`
    pub fn from_sequences(batch: &wm_rssm::SequenceTensors) -> Self {
        Self::with_history(
            batch.obs.clone(),
            batch.action.clone(),
            batch.is_first.clone(),
        )
    }

    /// The current observations.
    ///
    /// # Shapes
    /// - `[B, O]`
    pub fn obs(&self) -> &Tensor<2> {
        &self.obs
    }

    /// The history, if one was given.
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// Batch size `B`.
    pub fn batch_size(&self) -> usize {
        self.obs.dims()[0]
    }
}

impl From<Tensor<2>> for Context {
    fn from(obs: Tensor<2>) -> Self {
        Self::new(obs)
    }
}

/// What one model step predicts, in raw units.
#[derive(Clone, Debug)]
pub struct StepPrediction {
    /// Next observations (a sample, or the central prediction), `[B, O]`.
    pub obs: Tensor<2>,
    /// Rewards for the step, `[B]`.
    pub reward: Tensor<1>,
    /// Probability that the state reached is not terminal, `[B]`.
    pub continue_prob: Tensor<1>,
}

/// The actions that drive [`WorldModel::imagine`].
#[allow(clippy::large_enum_variant)] // passed by value once per call; boxing the sequence gains nothing
pub enum ImagineActions<'a, S> {
    /// A fixed sequence of raw actions, `[B, H, A]`.
    Sequence(Tensor<3>),
    /// A policy called once per step with the current state and its observation `[B, O]`
    /// (for the first call, [`WorldModel::observation`] of the start state; after that, the
    /// predicted observation); it returns raw actions `[B, A]`.
    Policy {
        /// Number of steps `H`.
        horizon: usize,
        /// The policy.
        policy: &'a mut dyn FnMut(&S, &Tensor<2>) -> Tensor<2>,
    },
}

/// An imagined rollout: step `i` is what followed the `i`-th action.
///
/// # Shapes
/// `B` batch, `H` horizon.
#[derive(Clone, Debug)]
pub struct Rollout<S> {
    /// Predicted observations, `[B, H, O]`.
    pub obs: Tensor<3>,
    /// Predicted rewards, `[B, H]`.
    pub reward: Tensor<2>,
    /// Continue probabilities of the states reached, `[B, H]`.
    pub continue_prob: Tensor<2>,
    /// The state after the last action (to continue imagining).
    pub last: S,
}

impl<S> Rollout<S> {
    /// Batch size `B`.
    pub fn batch_size(&self) -> usize {
        self.reward.dims()[0]
    }

    /// Horizon `H`.
    pub fn horizon(&self) -> usize {
        self.reward.dims()[1]
    }

    /// The expected discounted return of each row, `sum_i discount^i r_i prod_{k < i} c_k`:
    /// reward `i` counts only if no earlier state was terminal (the start state is taken as
    /// not terminal). With `discount = 1` this is the expected sum of rewards.
    ///
    /// # Shapes
    /// - returns `[B]`
    pub fn discounted_return(&self, discount: f32) -> Tensor<1> {
        discounted_return(self.reward.clone(), self.continue_prob.clone(), discount)
    }
}

/// `sum_i discount^i r_i prod_{k < i} c_k` for each row ([`Rollout::discounted_return`]).
///
/// # Shapes
/// - `reward`, `continue_prob`: `[B, H]`; returns `[B]`
fn discounted_return(reward: Tensor<2>, continue_prob: Tensor<2>, discount: f32) -> Tensor<1> {
    let [b, h] = reward.dims();
    let device = reward.device();
    let alive = if h == 1 {
        Tensor::<2>::ones([b, 1], &device)
    } else {
        Tensor::cat(
            vec![
                Tensor::<2>::ones([b, 1], &device),
                continue_prob.narrow(1, 0, h - 1),
            ],
            1,
        )
        .cumprod(1)
    };
    let powers: Vec<f32> = (0..h).map(|i| discount.powi(i as i32)).collect();
    let powers = Tensor::<2>::from_data(TensorData::new(powers, [1, h]), &device);
    (reward * alive * powers).sum_dim(1).reshape([b])
}

/// A world model seen from a planner: a batched latent state that starts from real data and
/// steps with raw actions. Implemented for the one-step models of `wm_models` (state = the
/// observation) and for the [`Rssm`](wm_rssm::Rssm) (state = `(h, z)`).
pub trait WorldModel {
    /// A batched latent state (row `b` belongs to batch entry `b`).
    type State: Clone;

    /// Observation width `O`.
    fn obs_dim(&self) -> usize;

    /// The action space; actions are raw, `[B, raw_width()]`.
    fn action_spec(&self) -> &ActionSpec;

    /// The latent state of the context's current observations. `sample` chooses between a
    /// sample and the mode of the RSSM's posterior (one-step models ignore it).
    ///
    /// # Shapes
    /// - `context`: batch `B`; returns a state of batch `B`
    fn start(&self, context: &Context, sample: bool) -> Self::State;

    /// Advances a state with one *real* transition: the action taken and the observation it
    /// led to (the RSSM's posterior update, for filtering during an episode without
    /// re-observing the history; one-step models return `obs`).
    ///
    /// # Shapes
    /// - `state`: batch `B`; `action`: `[B, A]`; `obs`: `[B, O]`; returns batch `B`
    fn observe_step(
        &self,
        state: &Self::State,
        action: Tensor<2>,
        obs: Tensor<2>,
        sample: bool,
    ) -> Self::State;

    /// One imagined step: the next state and what it predicts.
    ///
    /// # Shapes
    /// - `state`: batch `B`; `action`: `[B, A]`
    /// - returns a state of batch `B` and `[B, O]`, `[B]`, `[B]`
    ///
    /// # Panics
    /// If `action` is not `[B, A]`.
    fn step(
        &self,
        state: &Self::State,
        action: Tensor<2>,
        sample: bool,
    ) -> (Self::State, StepPrediction);

    /// One imagined step that predicts only what a planner scores: the next state, the reward
    /// `[B]` and the continue probability `[B]`. The default is [`WorldModel::step`] without its
    /// observation; the RSSM overrides it to skip its decoder.
    ///
    /// # Panics
    /// As [`WorldModel::step`].
    fn step_reward(
        &self,
        state: &Self::State,
        action: Tensor<2>,
        sample: bool,
    ) -> (Self::State, Tensor<1>, Tensor<1>) {
        let (next, prediction) = self.step(state, action, sample);
        (next, prediction.reward, prediction.continue_prob)
    }

    /// The device a state lives on (where planners put their candidate actions). The default
    /// reads it from [`WorldModel::observation`]; models whose state holds a tensor override it
    /// to avoid computing the observation.
    fn device_of(&self, state: &Self::State) -> Device {
        self.observation(state).device()
    }

    /// The observation a state stands for: the state itself for one-step models, the decoder
    /// mean for the RSSM.
    ///
    /// # Shapes
    /// - returns `[B, O]`
    fn observation(&self, state: &Self::State) -> Tensor<2>;

    /// Batch size `B` of a state.
    fn batch_size(&self, state: &Self::State) -> usize;

    /// Width `F` of [`WorldModel::features`].
    fn feature_dim(&self) -> usize {
        self.obs_dim()
    }

    /// What a policy or a value network reads of a state: the model's normalised observation
    /// for the one-step models, `[h, z]` for the RSSM. The default is
    /// [`WorldModel::observation`].
    ///
    /// # Shapes
    /// - returns `[B, F]`
    fn features(&self, state: &Self::State) -> Tensor<2> {
        self.observation(state)
    }

    /// The latent state at **every** step of the context's history, row `b * T + t` for step
    /// `t` of sequence `b` (the current observation alone, `T = 1`, without a history):
    /// Dreamer starts imagination from all posterior states of a replayed batch. The default
    /// starts from each observation on its own (right for models whose state is the
    /// observation); the RSSM filters the whole history.
    ///
    /// # Shapes
    /// - `context`: batch `B`, history length `T`; returns a state of batch `B * T`
    fn start_every_step(&self, context: &Context, sample: bool) -> Self::State {
        match context.history() {
            Some(history) => {
                let [b, t, o] = history.obs.dims();
                self.start(
                    &Context::new(history.obs.clone().reshape([b * t, o])),
                    sample,
                )
            }
            None => self.start(context, sample),
        }
    }

    /// Tiles each row `times` times, row-major: row `b` becomes rows
    /// `b * times .. (b + 1) * times`.
    ///
    /// # Shapes
    /// - `state`: batch `B`; returns batch `B * times`
    fn repeat(&self, state: &Self::State, times: usize) -> Self::State;

    /// Rolls the model out for `H` steps from `start`: **the** imagination loop of the workspace
    /// ([`imagine_by_steps`], which calls [`WorldModel::step`] once per step); the planners and
    /// the actor-critic go through it (and `wm_train::world_model` makes it available for any
    /// model a config names, for evaluation). Models do not override it, except
    /// `wm_plan::TrueDynamics`, which keeps the physics' `f64` state across the steps of a fixed
    /// sequence.
    ///
    /// # Shapes
    /// - `start`: batch `B`; `ImagineActions::Sequence`: `[B, H, A]`; a policy returns `[B, A]`
    /// - returns [`Rollout`] with `[B, H, ..]` tensors
    ///
    /// # Panics
    /// If the actions have the wrong shape or `H = 0`.
    fn imagine(
        &self,
        start: &Self::State,
        actions: ImagineActions<'_, Self::State>,
        sample: bool,
    ) -> Rollout<Self::State> {
        imagine_by_steps(self, start, actions, sample)
    }

    /// The predicted discounted return of fixed action sequences from `start`, with the model's
    /// central prediction (`sample: false`): [`Rollout::discounted_return`] of the rollout, but
    /// stepped with [`WorldModel::step_reward`] (the same loop without predicting the
    /// observations). What planners score their candidates with: all `B` rows step together,
    /// one model step per horizon step.
    ///
    /// # Shapes
    /// - `start`: batch `B`; `actions`: `[B, H, A]`; returns `[B]`
    ///
    /// # Panics
    /// If the actions have the wrong shape or `H = 0`.
    fn discounted_returns(
        &self,
        start: &Self::State,
        actions: Tensor<3>,
        discount: f32,
    ) -> Tensor<1> {
        let (_, reward, continue_prob, _) =
            run_steps(self, start, ImagineActions::Sequence(actions), false, false);
        discounted_return(reward, continue_prob, discount)
    }
}

/// [`WorldModel::imagine`]'s loop: [`WorldModel::step`] once per step (public so that a model
/// overriding `imagine` for one kind of actions can fall back to it for the others).
///
/// # Shapes
/// As [`WorldModel::imagine`].
pub fn imagine_by_steps<M: WorldModel + ?Sized>(
    model: &M,
    start: &M::State,
    actions: ImagineActions<'_, M::State>,
    sample: bool,
) -> Rollout<M::State> {
    let (obs, reward, continue_prob, last) = run_steps(model, start, actions, sample, true);
    Rollout {
        obs: obs.expect("observations were asked for"),
        reward,
        continue_prob,
        last,
    }
}

/// The one loop: `H` steps from `start`, with [`WorldModel::step`] when `with_obs` (or when a
/// policy needs the observations), else with [`WorldModel::step_reward`]. Returns the
/// observations `[B, H, O]` (when computed), rewards and continue probabilities `[B, H]` and
/// the last state.
fn run_steps<M: WorldModel + ?Sized>(
    model: &M,
    start: &M::State,
    actions: ImagineActions<'_, M::State>,
    sample: bool,
    with_obs: bool,
) -> (Option<Tensor<3>>, Tensor<2>, Tensor<2>, M::State) {
    let b = model.batch_size(start);
    let w = model.action_spec().raw_width();
    let (horizon, mut sequence, mut policy) = match actions {
        ImagineActions::Sequence(seq) => {
            let [sb, h, sw] = seq.dims();
            assert!(
                sb == b && sw == w,
                "action sequence shape {:?}, expected [{b}, H, {w}]",
                seq.dims()
            );
            let steps = if h == 0 { Vec::new() } else { seq.split(1, 1) };
            (h, Some(steps.into_iter()), None)
        }
        ImagineActions::Policy { horizon, policy } => (horizon, None, Some(policy)),
    };
    assert!(horizon > 0, "imagine needs a horizon > 0");
    let with_obs = with_obs || policy.is_some();
    let mut obs_now = policy.as_ref().map(|_| model.observation(start));
    let mut state = start.clone();
    let (mut obs, mut reward, mut cont) = (
        Vec::with_capacity(horizon),
        Vec::with_capacity(horizon),
        Vec::with_capacity(horizon),
    );
    for _ in 0..horizon {
        let action = match (&mut sequence, &mut policy) {
            (Some(seq), _) => seq.next().expect("one action per step").reshape([b, w]),
            (None, Some(policy)) => {
                let a = policy(&state, obs_now.as_ref().expect("current observation"));
                assert_eq!(
                    a.dims(),
                    [b, w],
                    "policy returned actions of shape {:?}, expected [{b}, {w}]",
                    a.dims()
                );
                a
            }
            (None, None) => unreachable!(),
        };
        let next = if with_obs {
            let (next, pred) = model.step(&state, action, sample);
            if obs_now.is_some() {
                obs_now = Some(pred.obs.clone());
            }
            obs.push(pred.obs);
            reward.push(pred.reward);
            cont.push(pred.continue_prob);
            next
        } else {
            let (next, r, c) = model.step_reward(&state, action, sample);
            reward.push(r);
            cont.push(c);
            next
        };
        state = next;
    }
    let obs = with_obs.then(|| Tensor::stack(obs, 1));
    (obs, Tensor::stack(reward, 1), Tensor::stack(cont, 1), state)
}

/// Tiles each row (index of dimension 0) `times` times, row-major: row `b` becomes rows
/// `b * times .. (b + 1) * times`.
///
/// # Shapes
/// - `x`: `[B, ..]`; returns `[B * times, ..]`
pub fn repeat_rows<const D: usize>(x: Tensor<D>, times: usize) -> Tensor<D> {
    if times == 1 {
        return x;
    }
    let b = x.dims()[0];
    let index = repeat_index(b, times, &x.device());
    x.select(0, index)
}

/// The row index of [`repeat_rows`]: `[0 (times), 1 (times), .., B - 1 (times)]`.
///
/// # Shapes
/// - returns `[B * times]`
pub(crate) fn repeat_index(b: usize, times: usize, device: &Device) -> Tensor<1, Int> {
    let index: Vec<i64> = (0..b as i64)
        .flat_map(|i| std::iter::repeat_n(i, times))
        .collect();
    Tensor::<1, Int>::from_data(TensorData::new(index, [b * times]), device)
}

/// Checks raw actions against the batch and the action space.
fn check_action(spec: &ActionSpec, b: usize, action: &Tensor<2>) {
    assert_eq!(
        action.dims(),
        [b, spec.raw_width()],
        "action shape {:?}, expected [{b}, {}] for {spec:?}",
        action.dims(),
        spec.raw_width()
    );
}

#[cfg(test)]
pub(crate) mod test_util;

#[cfg(test)]
mod tests {
    use super::*;

    fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn repeat_rows_tiles_each_row_consecutively() {
        let device = wm_backend::test_device();
        let x = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
        let y = repeat_rows(x, 3);
        assert_eq!(y.dims(), [6, 2], "actual {:?}", y.dims());
        assert_eq!(
            vec(y),
            [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 3.0, 4.0]
        );
        let z = repeat_rows(Tensor::<1>::from_floats([5.0, 6.0], &device), 2);
        assert_eq!(vec(z), [5.0, 5.0, 6.0, 6.0]);
    }

    #[test]
    fn context_with_history_takes_the_last_step_as_the_current_observation() {
        let device = wm_backend::test_device();
        let obs = Tensor::<3>::from_floats(
            [[[1.0, 1.0], [2.0, 2.0]], [[3.0, 3.0], [4.0, 4.0]]],
            &device,
        );
        let c = Context::with_history(
            obs,
            Tensor::zeros([2, 2, 1], &device),
            Tensor::zeros([2, 2], &device),
        );
        assert_eq!(c.batch_size(), 2);
        assert_eq!(c.obs().dims(), [2, 2], "actual {:?}", c.obs().dims());
        assert_eq!(vec(c.obs().clone()), [2.0, 2.0, 4.0, 4.0]);
        assert!(c.history().is_some());
        let plain: Context = Tensor::<2>::zeros([3, 2], &device).into();
        assert!(plain.history().is_none());
        assert_eq!(plain.batch_size(), 3);
    }

    #[test]
    #[should_panic(expected = "history shapes")]
    fn context_rejects_a_history_with_mismatched_lengths() {
        let device = wm_backend::test_device();
        Context::with_history(
            Tensor::zeros([2, 3, 2], &device),
            Tensor::zeros([2, 2, 1], &device),
            Tensor::zeros([2, 3], &device),
        );
    }

    #[test]
    fn discounted_return_counts_rewards_until_termination() {
        let device = wm_backend::test_device();
        let rollout = Rollout {
            obs: Tensor::<3>::zeros([2, 3, 1], &device),
            reward: Tensor::from_floats([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]], &device),
            continue_prob: Tensor::from_floats([[1.0, 0.5, 0.0], [0.0, 1.0, 1.0]], &device),
            last: (),
        };
        assert_eq!((rollout.batch_size(), rollout.horizon()), (2, 3));
        // Row 0: 1 + 2 * 1 + 4 * 0.5 = 5 (gamma 1); row 1: only the first reward counts.
        assert_eq!(vec(rollout.discounted_return(1.0)), [5.0, 1.0]);
        // Gamma 0.5: 1 + 0.5 * 2 + 0.25 * 4 * 0.5 = 2.5.
        assert_eq!(vec(rollout.discounted_return(0.5)), [2.5, 1.0]);
    }
}
