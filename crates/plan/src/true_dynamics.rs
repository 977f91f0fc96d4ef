//! [`TrueDynamics`]: the real environment physics behind the [`WorldModel`] trait, so that a
//! planner can be checked apart from learning.

use burn::tensor::{Tensor, TensorData};
use wm_envs::{Action, CARTPOLE_ID, CartPole, Env, EnvError, PENDULUM_ID, Pendulum};
use wm_imagine::{Context, ImagineActions, Rollout, StepPrediction, WorldModel, imagine_by_steps};
use wm_models::ActionSpec;

/// The environment whose physics is simulated.
#[derive(Clone, Debug)]
enum Physics {
    CartPole(CartPole),
    Pendulum(Pendulum),
}

/// A [`WorldModel`] that steps the *real* environment on the host, row by row: for each row it
/// sets the environment's state from the observation and steps it. It predicts the next
/// observation, the reward and the continue probability `1 - terminated` (truncation by the
/// time limit is ignored; the state is reset from the observation on every step, so time
/// limits never fire and terminated states can be stepped on).
///
/// - CartPole: the observation is the state `[x, x_dot, theta, theta_dot]` (its `f32`
///   rounding, when a step starts from an observation).
/// - Pendulum: the state is recovered as `theta = atan2(sin, cos)`, `theta_dot` from the
///   observation `[cos, sin, theta_dot]`.
///
/// The state is the observation tensor `[B, O]`. It is deterministic, so `sample` is ignored.
/// [`WorldModel::imagine`] of a fixed sequence keeps each row's full `f64` state between the
/// steps (one read-back of the actions, three uploads); a policy falls back to stepping.
///
/// # Shapes
/// - state: `[B, O]` (`O` = 4 for CartPole, 3 for Pendulum); actions `[B, 1]` (CartPole: the
///   index as `f32`, rounded and clamped to `{0, 1}`; Pendulum: the torque, clipped to
///   `[-2, 2]` by the environment)
#[derive(Clone, Debug)]
pub struct TrueDynamics {
    physics: Physics,
    spec: ActionSpec,
    obs_dim: usize,
}

impl TrueDynamics {
    /// Gymnasium's `CartPole-v1`.
    pub fn cartpole() -> Self {
        Self::from_cartpole(CartPole::new())
    }

    /// A cart-pole with the constants of `env` (its state and clock are not used).
    pub fn from_cartpole(env: CartPole) -> Self {
        Self {
            physics: Physics::CartPole(env),
            spec: ActionSpec::Discrete { n: 2 },
            obs_dim: 4,
        }
    }

    /// Gymnasium's `Pendulum-v1`.
    pub fn pendulum() -> Self {
        Self {
            physics: Physics::Pendulum(Pendulum::new()),
            spec: ActionSpec::Continuous {
                low: vec![-2.0],
                high: vec![2.0],
            },
            obs_dim: 3,
        }
    }

    /// By short name or Gymnasium id, as [`wm_envs::make`]: `"cartpole"` / `"CartPole-v1"` or
    /// `"pendulum"` / `"Pendulum-v1"`.
    ///
    /// # Errors
    /// [`EnvError::Unsupported`] for the stochastic environments (their next state is random,
    /// and this model steps deterministic physics), [`EnvError::UnknownEnv`] for any other name.
    pub fn from_name(name: &str) -> Result<Self, EnvError> {
        match name {
            "cartpole" | CARTPOLE_ID => Ok(Self::cartpole()),
            "pendulum" | PENDULUM_ID => Ok(Self::pendulum()),
            _ => {
                let env = wm_envs::make(name)?;
                Err(EnvError::Unsupported {
                    env_id: env.id().to_string(),
                    operation: "TrueDynamics",
                    reason: "its transitions are random and TrueDynamics steps deterministic \
                             physics only (cartpole, pendulum); sample its law through \
                             wm_envs::stochastic_transition instead"
                        .to_string(),
                })
            }
        }
    }

    /// The environment with its state set from one observation row.
    fn physics_at(&self, obs: &[f32]) -> Physics {
        let mut physics = self.physics.clone();
        match &mut physics {
            Physics::CartPole(env) => {
                env.set_state(std::array::from_fn(|i| f64::from(obs[i])));
            }
            Physics::Pendulum(env) => {
                let theta = f64::from(obs[1]).atan2(f64::from(obs[0]));
                env.set_state([theta, f64::from(obs[2])]);
            }
        }
        physics
    }

    /// One real step from the environment's current (`f64`) state: writes the next
    /// observation into `obs_out` and returns `(reward, continue)`.
    fn advance(&self, physics: &mut Physics, action: &[f32], obs_out: &mut [f32]) -> (f32, f32) {
        let step = match physics {
            Physics::CartPole(env) => {
                // Restart the clock so that time limits and earlier terminations never block.
                env.set_state(env.state());
                let index = action[0].round().clamp(0.0, 1.0) as usize;
                env.step(&Action::Discrete(index))
            }
            Physics::Pendulum(env) => {
                env.set_state(env.state());
                env.step(&Action::Continuous(action.to_vec()))
            }
        }
        .unwrap_or_else(|e| panic!("TrueDynamics cannot step action {action:?}: {e}"));
        obs_out.copy_from_slice(&step.obs);
        (step.reward as f32, if step.terminated { 0.0 } else { 1.0 })
    }

    fn check_obs(&self, obs: &Tensor<2>) {
        assert_eq!(
            obs.dims()[1],
            self.obs_dim,
            "observation shape {:?}, expected [B, {}]",
            obs.dims(),
            self.obs_dim
        );
    }
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor")
}

impl WorldModel for TrueDynamics {
    type State = Tensor<2>;

    fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    fn action_spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn start(&self, context: &Context, _sample: bool) -> Tensor<2> {
        self.check_obs(context.obs());
        context.obs().clone()
    }

    fn observe_step(
        &self,
        state: &Tensor<2>,
        action: Tensor<2>,
        obs: Tensor<2>,
        _sample: bool,
    ) -> Tensor<2> {
        assert_eq!(action.dims(), [state.dims()[0], 1], "action shape");
        self.check_obs(&obs);
        obs
    }

    fn step(
        &self,
        state: &Tensor<2>,
        action: Tensor<2>,
        _sample: bool,
    ) -> (Tensor<2>, StepPrediction) {
        self.check_obs(state);
        let b = state.dims()[0];
        assert_eq!(
            action.dims(),
            [b, 1],
            "action shape {:?}, expected [{b}, 1]",
            action.dims()
        );
        let device = state.device();
        let (obs, actions) = (host(state.clone()), host(action));
        let o = self.obs_dim;
        let mut next = vec![0.0; b * o];
        let (mut reward, mut cont) = (vec![0.0; b], vec![0.0; b]);
        for row in 0..b {
            let mut physics = self.physics_at(&obs[row * o..(row + 1) * o]);
            (reward[row], cont[row]) = self.advance(
                &mut physics,
                &actions[row..row + 1],
                &mut next[row * o..(row + 1) * o],
            );
        }
        let next = Tensor::<2>::from_data(TensorData::new(next, [b, o]), &device);
        let prediction = StepPrediction {
            obs: next.clone(),
            reward: Tensor::from_data(TensorData::new(reward, [b]), &device),
            continue_prob: Tensor::from_data(TensorData::new(cont, [b]), &device),
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
        wm_imagine::repeat_rows(state.clone(), times)
    }

    fn device_of(&self, state: &Tensor<2>) -> burn::tensor::Device {
        state.device()
    }

    /// The exact rollout of `imagine` (the physics' `f64` state kept between steps).
    fn discounted_returns(
        &self,
        start: &Tensor<2>,
        actions: Tensor<3>,
        discount: f32,
    ) -> Tensor<1> {
        self.imagine(start, ImagineActions::Sequence(actions), false)
            .discounted_return(discount)
    }

    fn imagine(
        &self,
        start: &Tensor<2>,
        actions: ImagineActions<'_, Tensor<2>>,
        sample: bool,
    ) -> Rollout<Tensor<2>> {
        let sequence = match actions {
            ImagineActions::Sequence(sequence) => sequence,
            policy => return imagine_by_steps(self, start, policy, sample),
        };
        self.check_obs(start);
        let b = start.dims()[0];
        let [sb, h, w] = sequence.dims();
        assert!(
            sb == b && w == 1,
            "action sequence shape {:?}, expected [{b}, H, 1]",
            sequence.dims()
        );
        assert!(h > 0, "imagine needs a horizon > 0");
        let device = start.device();
        let o = self.obs_dim;
        let obs = host(start.clone());
        let actions = sequence
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 actions");
        let mut next = vec![0.0; b * h * o];
        let (mut reward, mut cont) = (vec![0.0; b * h], vec![0.0; b * h]);
        for row in 0..b {
            let mut physics = self.physics_at(&obs[row * o..(row + 1) * o]);
            for t in 0..h {
                let i = row * h + t;
                (reward[i], cont[i]) = self.advance(
                    &mut physics,
                    &actions[i..i + 1],
                    &mut next[i * o..(i + 1) * o],
                );
            }
        }
        let last: Vec<f32> = (0..b)
            .flat_map(|row| {
                let i = row * h + h - 1;
                next[i * o..(i + 1) * o].to_vec()
            })
            .collect();
        Rollout {
            obs: Tensor::from_data(TensorData::new(next, [b, h, o]), &device),
            reward: Tensor::from_data(TensorData::new(reward, [b, h]), &device),
            continue_prob: Tensor::from_data(TensorData::new(cont, [b, h]), &device),
            last: Tensor::from_data(TensorData::new(last, [b, o]), &device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn true_dynamics_steps_like_the_real_environments() {
        let device = wm_backend::test_device();
        // Pendulum: stepping the model from an observation equals stepping the environment.
        let mut env = Pendulum::new();
        let obs = env.reset(Some(3));
        let real = env.step(&Action::Continuous(vec![1.5])).unwrap();
        let model = TrueDynamics::pendulum();
        let state = Tensor::<2>::from_data(TensorData::new(obs, [1, 3]), &device);
        let (_, p) = model.step(&state, Tensor::from_floats([[1.5]], &device), false);
        let got = vec(p.obs);
        for (g, r) in got.iter().zip(&real.obs) {
            assert!((g - r).abs() < 1e-5, "obs {got:?} vs real {:?}", real.obs);
        }
        assert!((vec(p.reward)[0] - real.reward as f32).abs() < 1e-4);
        assert_eq!(vec(p.continue_prob), [1.0]);

        // CartPole: imagine equals the real episode, and a termination gives continue 0.
        let mut env = CartPole::new();
        let obs = env.reset(Some(0));
        let model = TrueDynamics::from_name("CartPole-v1").unwrap();
        let start = Tensor::<2>::from_data(TensorData::new(obs, [1, 4]), &device);
        let h = 30;
        let rollout = model.imagine(
            &start,
            ImagineActions::Sequence(Tensor::ones([1, h, 1], &device)),
            false,
        );
        let (obs, cont) = (vec(rollout.obs), vec(rollout.continue_prob));
        let mut ended = false;
        for t in 0..h {
            let real = env.step(&Action::Discrete(1)).unwrap();
            assert_eq!(obs[t * 4..(t + 1) * 4], real.obs[..], "step {t}");
            assert_eq!(cont[t], if real.terminated { 0.0 } else { 1.0 }, "step {t}");
            if real.terminated {
                ended = true;
                break;
            }
        }
        assert!(
            ended,
            "always pushing right should topple the pole in {h} steps"
        );
        assert!(matches!(
            TrueDynamics::from_name("acrobot"),
            Err(EnvError::UnknownEnv { .. })
        ));
        for name in [
            "kicked_pendulum",
            "GustyCartPole-v0",
            "wet_chicken",
            "bimodal_walk",
        ] {
            let error = TrueDynamics::from_name(name).expect_err("stochastic");
            assert!(
                error
                    .to_string()
                    .contains("cannot be used for TrueDynamics"),
                "{name}: {error}"
            );
        }
    }
}
