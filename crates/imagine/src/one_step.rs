//! [`WorldModel`] for the one-step models of `wm_models`: the latent state is the observation.

use burn::tensor::Tensor;
use wm_models::{
    ActionSpec, AnyTransitionModel, Cvae, DeterministicMlp, GaussianMlp, TransitionModel,
};

use crate::{Context, StepPrediction, WorldModel, check_action, repeat_rows};

/// Checks that observations are `[B, O]` for the model's `O`.
fn check_obs(o: usize, what: &str, obs: &Tensor<2>) {
    assert_eq!(
        obs.dims()[1],
        o,
        "{what} shape {:?}, expected [B, {o}]",
        obs.dims()
    );
}

macro_rules! one_step_world_model {
    ($($model:ty),*) => {$(
        /// The state is the observation `[B, O]`; a step is
        /// [`TransitionModel::sample_next`] (`sample`) or [`TransitionModel::mean_next`], and
        /// the continue probability is `1 - terminated_prob`. `start` takes the context's
        /// current observation and ignores its history.
        impl WorldModel for $model {
            type State = Tensor<2>;

            fn obs_dim(&self) -> usize {
                self.spec().obs_dim
            }

            fn action_spec(&self) -> &ActionSpec {
                &self.spec().action
            }

            fn start(&self, context: &Context, _sample: bool) -> Tensor<2> {
                check_obs(self.obs_dim(), "context observation", context.obs());
                context.obs().clone()
            }

            fn observe_step(
                &self,
                state: &Tensor<2>,
                action: Tensor<2>,
                obs: Tensor<2>,
                _sample: bool,
            ) -> Tensor<2> {
                let b = state.dims()[0];
                check_action(self.action_spec(), b, &action);
                check_obs(self.obs_dim(), "observation", &obs);
                obs
            }

            fn step(
                &self,
                state: &Tensor<2>,
                action: Tensor<2>,
                sample: bool,
            ) -> (Tensor<2>, StepPrediction) {
                check_action(self.action_spec(), state.dims()[0], &action);
                let p = if sample {
                    self.sample_next(state.clone(), action)
                } else {
                    self.mean_next(state.clone(), action)
                };
                let prediction = StepPrediction {
                    obs: p.next_obs.clone(),
                    reward: p.reward,
                    continue_prob: p.terminated_prob.neg().add_scalar(1.0),
                };
                (p.next_obs, prediction)
            }

            fn observation(&self, state: &Tensor<2>) -> Tensor<2> {
                state.clone()
            }

            fn batch_size(&self, state: &Tensor<2>) -> usize {
                state.dims()[0]
            }

            fn device_of(&self, state: &Tensor<2>) -> burn::tensor::Device {
                state.device()
            }

            /// The observation normalised with the model's own normaliser (zero mean, unit
            /// variance on its training data).
            fn features(&self, state: &Tensor<2>) -> Tensor<2> {
                self.normalizer().normalize_obs_tensor(state.clone())
            }

            fn repeat(&self, state: &Tensor<2>, times: usize) -> Tensor<2> {
                repeat_rows(state.clone(), times)
            }
        }
    )*};
}

one_step_world_model!(AnyTransitionModel, Cvae, GaussianMlp, DeterministicMlp);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{materialise, seeded, vec};
    use crate::{ImagineActions, ModelEnv};
    use burn::tensor::{Device, Distribution};
    use wm_models::{
        CvaeConfig, DeterministicMlpConfig, GaussianMlpConfig, ModelSpec, Normalizer,
        TransitionModelConfig,
    };

    fn spec() -> ModelSpec {
        ModelSpec {
            obs_dim: 3,
            action: ActionSpec::Continuous {
                low: vec![-2.0],
                high: vec![2.0],
            },
        }
    }

    fn tiny_cvae(device: &Device) -> AnyTransitionModel {
        materialise(
            TransitionModelConfig::Cvae(CvaeConfig {
                hidden: vec![16],
                latent_dim: 2,
                ..Default::default()
            })
            .init(&spec(), Normalizer::identity(3), device),
        )
    }

    fn random(shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::random(shape, Distribution::Uniform(-2.0, 2.0), device)
    }

    #[test]
    fn every_one_step_model_imagines_the_documented_shapes() {
        let (_guard, device) = seeded(1);
        let (b, h) = (4, 5);
        for config in [
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
        ] {
            let model = config.init(&spec(), Normalizer::identity(3), &device);
            let kind = model.kind();
            let start = model.start(&Context::new(random([b, 3], &device)), true);
            assert_eq!(model.batch_size(&start), b, "{kind}");
            for sample in [false, true] {
                let actions =
                    Tensor::<3>::random([b, h, 1], Distribution::Uniform(-2.0, 2.0), &device);
                let r = model.imagine(&start, ImagineActions::Sequence(actions), sample);
                assert_eq!(
                    r.obs.dims(),
                    [b, h, 3],
                    "{kind}: obs shape {:?}",
                    r.obs.dims()
                );
                assert_eq!(
                    r.reward.dims(),
                    [b, h],
                    "{kind}: reward shape {:?}",
                    r.reward.dims()
                );
                assert_eq!(
                    r.continue_prob.dims(),
                    [b, h],
                    "{kind}: continue shape {:?}",
                    r.continue_prob.dims()
                );
                assert_eq!(
                    r.last.dims(),
                    [b, 3],
                    "{kind}: last shape {:?}",
                    r.last.dims()
                );
                let c = vec(r.continue_prob);
                assert!(c.iter().all(|p| (0.0..=1.0).contains(p)), "{kind}: {c:?}");
            }
        }
    }

    #[test]
    fn cvae_mean_imagine_equals_stepping_the_same_actions() {
        let (_guard, device) = seeded(2);
        let model = tiny_cvae(&device);
        let (b, h) = (3, 4);
        let start = random([b, 3], &device);
        let actions = Tensor::<3>::random([b, h, 1], Distribution::Uniform(-2.0, 2.0), &device);
        let r = model.imagine(&start, ImagineActions::Sequence(actions.clone()), false);
        let mut state = start.clone();
        for t in 0..h {
            let a = actions.clone().narrow(1, t, 1).reshape([b, 1]);
            let (next, p) = model.step(&state, a, false);
            let want = |x: Tensor<3>| vec(x.narrow(1, t, 1).reshape([b, 3]));
            assert_eq!(vec(p.obs), want(r.obs.clone()), "obs at step {t}");
            assert_eq!(
                vec(p.reward),
                vec(r.reward.clone().narrow(1, t, 1).reshape([b])),
                "reward at step {t}"
            );
            assert_eq!(
                vec(p.continue_prob),
                vec(r.continue_prob.clone().narrow(1, t, 1).reshape([b])),
                "continue at step {t}"
            );
            state = next;
        }
        assert_eq!(vec(state), vec(r.last));
    }

    #[test]
    fn sampled_cvae_rollout_is_reproducible_given_the_device_seed() {
        let (_guard, device) = seeded(3);
        let model = tiny_cvae(&device);
        let start = random([4, 3], &device);
        let actions = Tensor::<3>::random([4, 6, 1], Distribution::Uniform(-2.0, 2.0), &device);
        let run = |seed| {
            device.seed(seed);
            let r = model.imagine(&start, ImagineActions::Sequence(actions.clone()), true);
            (vec(r.obs), vec(r.reward))
        };
        let (a, b, c) = (run(7), run(7), run(8));
        assert_eq!(a, b, "same seed, same rollout");
        assert_ne!(a.0, c.0, "another seed, another rollout");
    }

    #[test]
    fn policy_driven_imagine_sees_the_start_then_the_predicted_observations() {
        let (_guard, device) = seeded(4);
        let model = tiny_cvae(&device);
        let (b, h) = (2, 3);
        let start = random([b, 3], &device);
        let mut seen = Vec::new();
        let mut policy = |state: &Tensor<2>, obs: &Tensor<2>| {
            assert_eq!(vec(state.clone()), vec(obs.clone()), "state = observation");
            seen.push(vec(obs.clone()));
            obs.clone().narrow(1, 0, 1).clamp(-2.0, 2.0)
        };
        let r = model.imagine(
            &start,
            ImagineActions::Policy {
                horizon: h,
                policy: &mut policy,
            },
            false,
        );
        assert_eq!(seen.len(), h);
        assert_eq!(seen[0], vec(start));
        assert_eq!(seen[1], vec(r.obs.clone().narrow(1, 0, 1).reshape([b, 3])));
        assert_eq!(r.obs.dims(), [b, h, 3], "actual {:?}", r.obs.dims());
    }

    #[test]
    fn repeat_tiles_observation_states_row_major() {
        let (_guard, device) = seeded(6);
        let model = DeterministicMlpConfig {
            hidden: vec![4],
            ..Default::default()
        }
        .init(&spec(), Normalizer::identity(3), &device);
        let s = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device);
        let r = model.repeat(&s, 2);
        assert_eq!(r.dims(), [4, 3], "actual {:?}", r.dims());
        assert_eq!(
            vec(r),
            [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 4.0, 5.0, 6.0]
        );
    }

    #[test]
    fn model_env_resets_from_observations_and_steps_a_batch() {
        let (_guard, device) = seeded(5);
        let model = tiny_cvae(&device);
        let mut env = ModelEnv::new(model.clone(), false);
        assert_eq!(env.batch_size(), 0, "no batch before reset");
        let obs = random([2, 3], &device);
        let first = env.reset(obs.clone());
        assert_eq!(
            vec(first),
            vec(obs.clone()),
            "reset returns the real observations"
        );
        assert_eq!(env.batch_size(), 2);
        let action = random([2, 1], &device);
        let step = env.step(action.clone());
        assert_eq!(step.obs.dims(), [2, 3], "actual {:?}", step.obs.dims());
        assert_eq!(step.reward.dims(), [2], "actual {:?}", step.reward.dims());
        assert_eq!(step.continue_prob.dims(), [2]);
        assert_eq!(step.done.len(), 2);
        let cont = vec(step.continue_prob.clone());
        assert_eq!(step.done, cont.iter().map(|c| *c < 0.5).collect::<Vec<_>>());
        // The same as the model's own step, and the env now holds the predicted observation.
        let (_, want) = model.step(&obs, action, false);
        assert_eq!(vec(step.obs.clone()), vec(want.obs));
        assert_eq!(vec(env.obs().unwrap().clone()), vec(step.obs));

        // Tiling: 2 start states, 3 copies each.
        let tiled = env.reset_repeated(Context::new(obs.clone()), 3);
        assert_eq!(tiled.dims(), [6, 3], "actual {:?}", tiled.dims());
        assert_eq!(env.batch_size(), 6);
        let s = env.step(random([6, 1], &device));
        assert_eq!(s.obs.dims(), [6, 3], "actual {:?}", s.obs.dims());
    }

    #[test]
    fn model_env_rollout_equals_stepping_and_set_state_branches_from_a_saved_state() {
        let (_guard, device) = seeded(8);
        let model = tiny_cvae(&device);
        let mut env = ModelEnv::new(model, false);
        let obs = random([2, 3], &device);
        env.reset(obs.clone());
        let saved = env.state().unwrap().clone();
        let actions = Tensor::<3>::random([2, 4, 1], Distribution::Uniform(-2.0, 2.0), &device);
        let r = env.rollout(actions.clone());
        assert_eq!(r.obs.dims(), [2, 4, 3], "actual {:?}", r.obs.dims());
        let after_rollout = vec(env.obs().unwrap().clone());
        // Branch back to the saved state and step the same actions one by one.
        assert_eq!(vec(env.set_state(saved)), vec(obs));
        let mut rewards = Vec::new();
        for t in 0..4 {
            rewards.push(
                env.step(actions.clone().narrow(1, t, 1).reshape([2, 1]))
                    .reward,
            );
        }
        assert_eq!(vec(Tensor::stack::<2>(rewards, 1)), vec(r.reward));
        assert_eq!(vec(env.obs().unwrap().clone()), after_rollout);
    }

    #[test]
    #[should_panic(expected = "ModelEnv::step before reset")]
    fn model_env_step_before_reset_panics() {
        let (_guard, device) = seeded(9);
        let mut env = ModelEnv::new(tiny_cvae(&device), false);
        env.step(Tensor::zeros([1, 1], &device));
    }

    #[test]
    #[should_panic(expected = "action shape [2, 2], expected [2, 1]")]
    fn step_rejects_actions_of_the_wrong_width() {
        let (_guard, device) = seeded(7);
        let model = tiny_cvae(&device);
        model.step(
            &Tensor::zeros([2, 3], &device),
            Tensor::zeros([2, 2], &device),
            false,
        );
    }
}
