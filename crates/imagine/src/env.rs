//! [`ModelEnv`]: a world model as a batched environment.

use burn::tensor::Tensor;

use crate::{Context, ImagineActions, Rollout, WorldModel};

/// What one [`ModelEnv::step`] returns, in raw units.
#[derive(Clone, Debug)]
pub struct ModelStep {
    /// Next observations, `[B, O]`.
    pub obs: Tensor<2>,
    /// Rewards, `[B]`.
    pub reward: Tensor<1>,
    /// Probability that the state reached is not terminal, `[B]`.
    pub continue_prob: Tensor<1>,
    /// `continue_prob < 0.5`, read back to the host, one entry per row.
    pub done: Vec<bool>,
}

/// A world model as an environment with a batch dimension: [`reset`](ModelEnv::reset) from real
/// observations, then [`step`](ModelEnv::step) with a batch of raw actions. The latent state
/// stays inside; a planner sees observations, rewards and continue probabilities only.
///
/// Rows are never stopped: a row whose `done` is set keeps being stepped (the model predicts
/// on), so a planner masks rewards itself, e.g. with the product of continue probabilities.
///
/// With `sample: false` every step is the model's central prediction (and the RSSM starts from
/// its posterior mode), so stepping is deterministic; with `sample: true` the model samples,
/// from the device RNG.
#[derive(Clone, Debug)]
pub struct ModelEnv<M: WorldModel> {
    model: M,
    sample: bool,
    state: Option<M::State>,
    obs: Option<Tensor<2>>,
}

impl<M: WorldModel> ModelEnv<M> {
    /// Wraps `model`; `sample` chooses sampled or central predictions (see the type docs).
    pub fn new(model: M, sample: bool) -> Self {
        Self {
            model,
            sample,
            state: None,
            obs: None,
        }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, giving up the environment.
    pub fn into_model(self) -> M {
        self.model
    }

    /// Whether steps sample.
    pub fn sample(&self) -> bool {
        self.sample
    }

    /// Batch size `B` of the current state; 0 before the first reset.
    pub fn batch_size(&self) -> usize {
        self.state
            .as_ref()
            .map_or(0, |state| self.model.batch_size(state))
    }

    /// Starts from real data ([`WorldModel::start`]) and returns the context's current
    /// observations (the real ones, not a reconstruction). A plain observation tensor converts
    /// into a [`Context`].
    ///
    /// # Shapes
    /// - `context`: batch `B` (`[B, O]` for a tensor); returns `[B, O]`
    pub fn reset(&mut self, context: impl Into<Context>) -> Tensor<2> {
        let context = context.into();
        self.state = Some(self.model.start(&context, self.sample));
        let obs = context.obs().clone();
        self.obs = Some(obs.clone());
        obs
    }

    /// [`reset`](ModelEnv::reset), then [`repeat`](ModelEnv::repeat): the context is filtered
    /// once and each start state is tiled `times` times (row `b` becomes rows
    /// `b * times .. (b + 1) * times`), to try `times` action sequences from each.
    ///
    /// # Shapes
    /// - `context`: batch `B`; returns `[B * times, O]`
    pub fn reset_repeated(&mut self, context: impl Into<Context>, times: usize) -> Tensor<2> {
        self.reset(context);
        self.repeat(times)
    }

    /// Tiles the current state and observations `times` times, row-major, and returns the
    /// tiled observations.
    ///
    /// # Shapes
    /// - returns `[B * times, O]`
    ///
    /// # Panics
    /// Before the first reset.
    pub fn repeat(&mut self, times: usize) -> Tensor<2> {
        let state = self.state.as_ref().expect("ModelEnv::repeat before reset");
        self.state = Some(self.model.repeat(state, times));
        let obs = crate::repeat_rows(self.obs.take().expect("observations"), times);
        self.obs = Some(obs.clone());
        obs
    }

    /// One step of the model from the current state.
    ///
    /// # Shapes
    /// - `action`: `[B, A]`; returns `[B, O]`, `[B]`, `[B]` and `B` flags
    ///
    /// # Panics
    /// Before the first reset, or if `action` is not `[B, A]`.
    pub fn step(&mut self, action: Tensor<2>) -> ModelStep {
        let state = self.state.as_ref().expect("ModelEnv::step before reset");
        let (next, p) = self.model.step(state, action, self.sample);
        self.state = Some(next);
        self.obs = Some(p.obs.clone());
        let done = p
            .continue_prob
            .clone()
            .lower_elem(0.5)
            .into_data()
            .iter::<bool>()
            .collect();
        ModelStep {
            obs: p.obs,
            reward: p.reward,
            continue_prob: p.continue_prob,
            done,
        }
    }

    /// `H` steps at once from the current state with a fixed action sequence
    /// ([`WorldModel::imagine`], batched where the model can); the environment ends in the last
    /// state. Reads nothing back to the host.
    ///
    /// # Shapes
    /// - `actions`: `[B, H, A]`; returns [`Rollout`] with `[B, H, ..]` tensors
    ///
    /// # Panics
    /// Before the first reset, or if `actions` is not `[B, H, A]` with `H > 0`.
    pub fn rollout(&mut self, actions: Tensor<3>) -> Rollout<M::State> {
        let state = self.state.as_ref().expect("ModelEnv::rollout before reset");
        let rollout = self
            .model
            .imagine(state, ImagineActions::Sequence(actions), self.sample);
        let [b, h, o] = rollout.obs.dims();
        self.obs = Some(rollout.obs.clone().narrow(1, h - 1, 1).reshape([b, o]));
        self.state = Some(rollout.last.clone());
        rollout
    }

    /// The current observations (the real ones after a reset, predictions after a step).
    ///
    /// # Shapes
    /// - `[B, O]`
    pub fn obs(&self) -> Option<&Tensor<2>> {
        self.obs.as_ref()
    }

    /// The current latent state, e.g. to branch from it later with
    /// [`set_state`](ModelEnv::set_state).
    pub fn state(&self) -> Option<&M::State> {
        self.state.as_ref()
    }

    /// Continues from `state`; returns its observation ([`WorldModel::observation`]).
    ///
    /// # Shapes
    /// - returns `[B, O]`
    pub fn set_state(&mut self, state: M::State) -> Tensor<2> {
        let obs = self.model.observation(&state);
        self.state = Some(state);
        self.obs = Some(obs.clone());
        obs
    }
}
