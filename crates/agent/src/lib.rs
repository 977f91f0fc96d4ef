#![warn(missing_docs)]
//! Policy learning in imagination: a Dreamer-style (DreamerV3, Hafner et al. 2023) actor and
//! critic trained on trajectories that a world model imagines from replayed start states,
//! through the [`WorldModel`](wm_imagine::WorldModel) trait, so it works with the RSSM and with
//! the one-step models alike.
//!
//! # One update ([`ActorCritic::update`])
//! 1. **Imagine** `H` steps (15) from `B` start states with the current policy, sampling the
//!    model (no gradients flow into it): features `f_0..f_H`, actions `a_0..a_{H-1}`, rewards
//!    `r_t` and continue probabilities `c_t` of each step.
//! 2. **Returns**: the critic's values `v_t` and the lambda-returns
//!    `R_t = r_t + gamma c_t ((1 - lambda) v_{t+1} + lambda R_{t+1})`, `R_H = v_H`
//!    ([`lambda_returns`]); each state is weighted by `w_t = prod_{k<t} gamma c_k`
//!    ([`discount_weights`]).
//! 3. **Return normalisation**: `S = max(1, EMA(P95(R)) - EMA(P5(R)))` ([`ReturnNormalizer`]).
//! 4. **Actor** (REINFORCE, for discrete and continuous actions):
//!    `L_actor = -mean_t w_t (log pi(a_t | f_t) sg((R_t - v_t) / S) + eta H[pi(. | f_t)])`.
//! 5. **Critic**: a categorical over 255 symlog-spaced bins trained with two-hot targets
//!    ([`TwoHot`]), `L_critic = mean_t w_t (CE(R_t) + CE(v_slow(f_t)))`, where the slow critic is
//!    an exponential moving average of the critic (decay 0.98 per update).
//! 6. One Adam step on both networks (each clipped to a global gradient norm of its own).
//!
//! # Acting
//! [`ActorCritic::policy`] is the actor without autodiff; [`Actor::forward`] on the features
//! of the world model's filtered state gives a [`PolicyDist`]: [`PolicyDist::sample`] while
//! collecting data, [`PolicyDist::mode`] for evaluation; [`Actor::to_raw`] maps the action to
//! environment units.
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use wm_agent::{ActorCritic, ActorCriticConfig};
//! use wm_imagine::WorldModel;
//! use wm_models::{ActionSpec, GaussianMlpConfig, ModelSpec, Normalizer, TransitionModelConfig};
//!
//! let device = Device::flex();
//! let spec = ModelSpec { obs_dim: 3, action: ActionSpec::Continuous { low: vec![-2.0], high: vec![2.0] } };
//! let model = TransitionModelConfig::Gaussian(GaussianMlpConfig { hidden: vec![8], ..Default::default() })
//!     .init(&spec, Normalizer::identity(3), &device);
//! let config = ActorCriticConfig { hidden: vec![16], horizon: 5, ..Default::default() };
//! let mut agent = ActorCritic::new(&config, model.feature_dim(), &spec.action, &device.clone().autodiff());
//! let starts = Tensor::<2>::random([32, 3], Distribution::Normal(0.0, 1.0), &device);
//! let metrics = agent.update(&model, &starts.into()); // the one-step models' state
//! assert!(metrics["critic_loss"].is_finite());
//! ```

mod learner;
mod policy;
mod returns;
mod twohot;

pub use learner::{
    ActorCritic, ActorCriticConfig, AgentBytes, AgentError, AgentNets, AgentState, Critic,
};
pub use policy::{Actor, PolicyBounds, PolicyDist};
pub use returns::{ReturnNormalizer, discount_weights, lambda_returns, quantile};
pub use twohot::TwoHot;

#[cfg(test)]
mod tests {
    //! Learning tests on a toy world model where the optimal policy is known: walk a point on a
    //! line towards 0, reward `-|x'|`.
    use super::*;
    use burn::tensor::{Device, Distribution, Tensor, TensorData};
    use wm_imagine::{Context, StepPrediction, WorldModel, repeat_rows};
    use wm_models::ActionSpec;

    /// flex has one RNG per process: tests that seed it run one at a time.
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn seeded(seed: u64) -> (std::sync::MutexGuard<'static, ()>, Device) {
        let guard = RNG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let device = wm_backend::test_device();
        device.seed(seed);
        (guard, device)
    }

    /// `x' = clamp(x + 0.3 u, -3, 3)`, `u = a` in `[-1, 1]` (continuous) or `u = 2a - 1` for
    /// `a` in `{0, 1}` (discrete); reward `-|x'|`; never terminal.
    struct Line {
        spec: ActionSpec,
    }

    impl WorldModel for Line {
        type State = Tensor<2>;
        fn obs_dim(&self) -> usize {
            1
        }
        fn action_spec(&self) -> &ActionSpec {
            &self.spec
        }
        fn start(&self, context: &Context, _sample: bool) -> Tensor<2> {
            context.obs().clone()
        }
        fn observe_step(
            &self,
            _state: &Tensor<2>,
            _action: Tensor<2>,
            obs: Tensor<2>,
            _sample: bool,
        ) -> Tensor<2> {
            obs
        }
        fn step(
            &self,
            state: &Tensor<2>,
            action: Tensor<2>,
            _sample: bool,
        ) -> (Tensor<2>, StepPrediction) {
            let [b, _] = state.dims();
            let u = match self.spec {
                ActionSpec::Discrete { .. } => action.mul_scalar(2.0).sub_scalar(1.0),
                ActionSpec::Continuous { .. } => action,
            };
            let next = (state.clone() + u.mul_scalar(0.3)).clamp(-3.0, 3.0);
            let reward = next.clone().abs().neg().reshape([b]);
            let prediction = StepPrediction {
                obs: next.clone(),
                reward,
                continue_prob: Tensor::ones([b], &next.device()),
            };
            (next, prediction)
        }
        fn observation(&self, state: &Tensor<2>) -> Tensor<2> {
            state.clone()
        }
        fn batch_size(&self, state: &Tensor<2>) -> usize {
            state.dims()[0]
        }
        fn repeat(&self, state: &Tensor<2>, times: usize) -> Tensor<2> {
            repeat_rows(state.clone(), times)
        }
    }

    fn host<const D: usize>(x: Tensor<D>) -> Vec<f32> {
        x.into_data().try_to_vec::<f32>().expect("f32")
    }

    /// Mean return over `horizon` steps of the actor's mode from the given starts.
    fn greedy_return(model: &Line, actor: &Actor, starts: &Tensor<2>, horizon: usize) -> f32 {
        let mut state = starts.clone();
        let mut total = 0.0;
        for _ in 0..horizon {
            let action = actor.to_raw(actor.forward(model.features(&state)).mode());
            let (next, prediction) = model.step(&state, action, false);
            total += host(prediction.reward.mean())[0];
            state = next;
        }
        total
    }

    fn train_on_line(spec: ActionSpec, seed: u64) -> (Line, ActorCritic, f32) {
        let (_guard, device) = seeded(seed);
        let model = Line { spec: spec.clone() };
        let config = ActorCriticConfig {
            hidden: vec![32, 32],
            horizon: 10,
            lr: 1e-3,
            ..Default::default()
        };
        let mut agent = ActorCritic::new(&config, 1, &spec, &device.clone().autodiff());
        let eval_starts = Tensor::<2>::from_data(
            TensorData::new(
                (0..41).map(|i| -2.0 + 0.1 * i as f32).collect::<Vec<_>>(),
                [41, 1],
            ),
            &device,
        );
        let before = greedy_return(&model, &agent.policy(), &eval_starts, 10);
        for _ in 0..300 {
            let starts = Tensor::<2>::random([128, 1], Distribution::Uniform(-2.0, 2.0), &device);
            let metrics = agent.update(&model, &starts);
            assert!(metrics.values().all(|v| v.is_finite()), "{metrics:?}");
        }
        let after = greedy_return(&model, &agent.policy(), &eval_starts, 10);
        assert!(after.is_finite() && before.is_finite());
        (model, agent, after - before)
    }

    #[test]
    fn continuous_actor_learns_to_walk_towards_the_reward() {
        // From starts in [-2, 2] the best 10-step return is about -3.75 per start (walk at full
        // speed to 0, then stay); a policy that pushes in one direction gets about -12.
        let (model, agent, gain) = train_on_line(
            ActionSpec::Continuous {
                low: vec![-1.0],
                high: vec![1.0],
            },
            7,
        );
        let device = wm_backend::test_device();
        let probes = Tensor::<2>::from_floats([[-1.5], [1.5]], &device);
        let actor = agent.policy();
        let action = host(actor.to_raw(actor.forward(model.features(&probes)).mode()));
        assert!(
            action[0] > 0.5 && action[1] < -0.5,
            "the actor should push towards 0 at full speed: {action:?}"
        );
        let starts = Tensor::<2>::from_data(
            TensorData::new(
                (0..41).map(|i| -2.0 + 0.1 * i as f32).collect::<Vec<_>>(),
                [41, 1],
            ),
            &device,
        );
        let ret = greedy_return(&model, &actor, &starts, 10);
        assert!(
            ret > -5.0,
            "mean greedy return {ret} (optimum about -3.75), gain {gain}"
        );
    }

    #[test]
    fn discrete_actor_learns_to_walk_towards_the_reward() {
        let (model, agent, _gain) = train_on_line(ActionSpec::Discrete { n: 2 }, 11);
        let device = wm_backend::test_device();
        let probes = Tensor::<2>::from_floats([[-1.5], [-0.8], [0.8], [1.5]], &device);
        let actor = agent.policy();
        let action = host(actor.to_raw(actor.forward(model.features(&probes)).mode()));
        assert_eq!(
            action,
            vec![1.0, 1.0, 0.0, 0.0],
            "class 1 moves right, class 0 left"
        );
        let starts = Tensor::<2>::from_data(
            TensorData::new(
                (0..41).map(|i| -2.0 + 0.1 * i as f32).collect::<Vec<_>>(),
                [41, 1],
            ),
            &device,
        );
        let ret = greedy_return(&model, &actor, &starts, 10);
        // Bang-bang control must oscillate around 0 (|x| alternates 0.1 and 0.2 at best), so
        // the optimum is a little worse than the continuous one.
        assert!(ret > -6.0, "mean greedy return {ret}");
    }

    #[test]
    fn the_critic_learns_the_value_of_a_fixed_reward_stream() {
        // Constant reward -1 and gamma 0.9: with lambda-returns bootstrapped at the horizon the
        // fixed point is v = -1 / (1 - 0.9) = -10 in every state.
        let (_guard, device) = seeded(5);
        let model = Line {
            spec: ActionSpec::Continuous {
                low: vec![-1.0],
                high: vec![1.0],
            },
        };
        let config = ActorCriticConfig {
            hidden: vec![16],
            horizon: 10,
            discount: 0.9,
            lr: 3e-3,
            entropy: 0.0,
            ..Default::default()
        };
        let mut agent = ActorCritic::new(&config, 1, &model.spec, &device.clone().autodiff());
        let initial = host(agent.value(Tensor::zeros([3, 1], &device)));
        assert!(
            initial.iter().all(|v| v.abs() < 1e-5),
            "the critic starts at 0: {initial:?}"
        );
        // States pinned at the wall x = 3: every step is clamped there, reward -3.
        let starts = Tensor::<2>::full([64, 1], 3.0, &device);
        let pinned = Line {
            spec: model.spec.clone(),
        };
        for _ in 0..1000 {
            // Keep the policy out of it: overwrite the walk so that x stays at 3.
            let _ = agent.update(&Pinned(&pinned), &starts);
        }
        let v = host(agent.value(Tensor::full([1, 1], 3.0, &device)))[0];
        assert!(
            (v - -30.0).abs() < 1.0,
            "value {v}, expected -3 / (1 - 0.9) = -30"
        );
    }

    /// The line with every step returning to `x = 3`, reward -3.
    struct Pinned<'a>(&'a Line);

    impl WorldModel for Pinned<'_> {
        type State = Tensor<2>;
        fn obs_dim(&self) -> usize {
            1
        }
        fn action_spec(&self) -> &ActionSpec {
            &self.0.spec
        }
        fn start(&self, context: &Context, sample: bool) -> Tensor<2> {
            self.0.start(context, sample)
        }
        fn observe_step(
            &self,
            state: &Tensor<2>,
            action: Tensor<2>,
            obs: Tensor<2>,
            sample: bool,
        ) -> Tensor<2> {
            self.0.observe_step(state, action, obs, sample)
        }
        fn step(
            &self,
            state: &Tensor<2>,
            _action: Tensor<2>,
            _sample: bool,
        ) -> (Tensor<2>, StepPrediction) {
            let [b, _] = state.dims();
            let device = state.device();
            let next = Tensor::full([b, 1], 3.0, &device);
            (
                next.clone(),
                StepPrediction {
                    obs: next,
                    reward: Tensor::full([b], -3.0, &device),
                    continue_prob: Tensor::ones([b], &device),
                },
            )
        }
        fn observation(&self, state: &Tensor<2>) -> Tensor<2> {
            state.clone()
        }
        fn batch_size(&self, state: &Tensor<2>) -> usize {
            state.dims()[0]
        }
        fn repeat(&self, state: &Tensor<2>, times: usize) -> Tensor<2> {
            repeat_rows(state.clone(), times)
        }
    }
}
