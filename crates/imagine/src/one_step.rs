//! [`WorldModel`] for the one-step models of `wm_models`: the latent state is the observation
//! (plus, for the probabilistic ensemble under TS-∞, the member each row is assigned to).

use burn::tensor::{Device, Int, Tensor};
use wm_models::{
    ActionSpec, AnyTransitionModel, Cvae, DeterministicMlp, GaussianMlp, ProbabilisticEnsemble,
    Propagation, TransitionModel,
};

use crate::{Context, StepPrediction, WorldModel, check_action, repeat_index, repeat_rows};

/// The state of [`AnyTransitionModel`] and [`ProbabilisticEnsemble`]: the observation, and the
/// ensemble member of each row where trajectory sampling fixes one (TS-∞).
///
/// `member` is `None` from [`WorldModel::start`] (which draws no random numbers, so acting
/// with the central prediction stays free of device draws); a TS-∞ ensemble draws it at the
/// first *sampled* step and carries it from then on, through [`WorldModel::step`],
/// [`WorldModel::observe_step`] and [`WorldModel::repeat`]. The other models pass it through
/// untouched.
#[derive(Clone, Debug)]
pub struct OneStepState {
    /// The observation, `[B, O]`.
    pub obs: Tensor<2>,
    /// The ensemble member of each row, `[B]` in `0..M`, once drawn.
    pub member: Option<Tensor<1, Int>>,
}

impl OneStepState {
    /// The rows `index` of the state, in that order.
    ///
    /// # Shapes
    /// - `index`: `[R]`; returns a state of batch `R`
    pub fn select(&self, index: Tensor<1, Int>) -> Self {
        Self {
            obs: self.obs.clone().select(0, index.clone()),
            member: self.member.clone().map(|m| m.select(0, index)),
        }
    }
}

impl From<Tensor<2>> for OneStepState {
    fn from(obs: Tensor<2>) -> Self {
        Self { obs, member: None }
    }
}

/// Checks that observations are `[B, O]` for the model's `O`.
fn check_obs(o: usize, what: &str, obs: &Tensor<2>) {
    assert_eq!(
        obs.dims()[1],
        o,
        "{what} shape {:?}, expected [B, {o}]",
        obs.dims()
    );
}

/// One step of a model whose state is the observation: a sample or the central prediction.
fn step_obs<M: TransitionModel>(
    model: &M,
    obs: &Tensor<2>,
    action: Tensor<2>,
    sample: bool,
) -> (Tensor<2>, StepPrediction) {
    let p = if sample {
        model.sample_next(obs.clone(), action)
    } else {
        model.mean_next(obs.clone(), action)
    };
    let prediction = StepPrediction {
        obs: p.next_obs.clone(),
        reward: p.reward,
        continue_prob: p.terminated_prob.neg().add_scalar(1.0),
    };
    (p.next_obs, prediction)
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
                step_obs(self, state, action, sample)
            }

            fn observation(&self, state: &Tensor<2>) -> Tensor<2> {
                state.clone()
            }

            fn batch_size(&self, state: &Tensor<2>) -> usize {
                state.dims()[0]
            }

            fn device_of(&self, state: &Tensor<2>) -> Device {
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

one_step_world_model!(Cvae, GaussianMlp, DeterministicMlp);

/// Both one-step state models ([`ProbabilisticEnsemble`] and [`AnyTransitionModel`]) share
/// everything but `step`.
macro_rules! one_step_state_world_model {
    ($model:ty, $step:ident) => {
        impl WorldModel for $model {
            type State = OneStepState;

            fn obs_dim(&self) -> usize {
                self.spec().obs_dim
            }

            fn action_spec(&self) -> &ActionSpec {
                &self.spec().action
            }

            /// The context's current observation (its history is ignored), no member yet.
            fn start(&self, context: &Context, _sample: bool) -> OneStepState {
                check_obs(self.obs_dim(), "context observation", context.obs());
                context.obs().clone().into()
            }

            /// The new observation; a member assignment is kept.
            fn observe_step(
                &self,
                state: &OneStepState,
                action: Tensor<2>,
                obs: Tensor<2>,
                _sample: bool,
            ) -> OneStepState {
                let b = state.obs.dims()[0];
                check_action(self.action_spec(), b, &action);
                check_obs(self.obs_dim(), "observation", &obs);
                OneStepState {
                    obs,
                    member: state.member.clone(),
                }
            }

            fn step(
                &self,
                state: &OneStepState,
                action: Tensor<2>,
                sample: bool,
            ) -> (OneStepState, StepPrediction) {
                check_action(self.action_spec(), state.obs.dims()[0], &action);
                $step(self, state, action, sample)
            }

            fn observation(&self, state: &OneStepState) -> Tensor<2> {
                state.obs.clone()
            }

            fn batch_size(&self, state: &OneStepState) -> usize {
                state.obs.dims()[0]
            }

            fn device_of(&self, state: &OneStepState) -> Device {
                state.obs.device()
            }

            /// The observation normalised with the model's own normaliser.
            fn features(&self, state: &OneStepState) -> Tensor<2> {
                self.normalizer().normalize_obs_tensor(state.obs.clone())
            }

            /// Tiles observations and members alike.
            fn repeat(&self, state: &OneStepState, times: usize) -> OneStepState {
                if times == 1 {
                    return state.clone();
                }
                let b = state.obs.dims()[0];
                state.select(repeat_index(b, times, &state.obs.device()))
            }
        }
    };
}

/// The ensemble's step: the mixture mean without `sample`; with it, by the config's
/// [`Propagation`]: TS-1 draws a member per row now, TS-∞ uses the state's members (drawing
/// them if the state has none yet) and returns them in the next state, `Expectation` samples
/// the averaged Gaussian.
fn ensemble_step(
    model: &ProbabilisticEnsemble,
    state: &OneStepState,
    action: Tensor<2>,
    sample: bool,
) -> (OneStepState, StepPrediction) {
    let mut member = state.member.clone();
    let (next, prediction) = match (sample, model.propagation()) {
        (true, Propagation::TsInf) => {
            let members = member.get_or_insert_with(|| {
                model.draw_members(state.obs.dims()[0], &state.obs.device())
            });
            let p = model.sample_next_from(state.obs.clone(), action, members.clone());
            let prediction = StepPrediction {
                obs: p.next_obs.clone(),
                reward: p.reward,
                continue_prob: p.terminated_prob.neg().add_scalar(1.0),
            };
            (p.next_obs, prediction)
        }
        _ => step_obs(model, &state.obs, action, sample),
    };
    (OneStepState { obs: next, member }, prediction)
}

/// [`AnyTransitionModel`]'s step: the ensemble's own, or the observation step of the others
/// (which keep `member` as it is).
fn any_step(
    model: &AnyTransitionModel,
    state: &OneStepState,
    action: Tensor<2>,
    sample: bool,
) -> (OneStepState, StepPrediction) {
    match model {
        AnyTransitionModel::Ensemble(ensemble) => ensemble_step(ensemble, state, action, sample),
        other => {
            let (obs, prediction) = step_obs(other, &state.obs, action, sample);
            let member = state.member.clone();
            (OneStepState { obs, member }, prediction)
        }
    }
}

one_step_state_world_model!(ProbabilisticEnsemble, ensemble_step);
one_step_state_world_model!(AnyTransitionModel, any_step);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{materialise, seeded, vec};
    use wm_models::Propagation;

    fn vec_int(t: Tensor<1, Int>) -> Vec<usize> {
        t.into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .expect("int tensor")
            .into_iter()
            .map(|m| m as usize)
            .collect()
    }
    use crate::{ImagineActions, ModelEnv};
    use burn::tensor::{Device, Distribution};
    use wm_models::{
        CvaeConfig, DeterministicMlpConfig, EnsembleConfig, GaussianMlpConfig, ModelSpec,
        Normalizer, TransitionModelConfig,
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
            TransitionModelConfig::Ensemble(EnsembleConfig {
                members: 3,
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
                    r.last.obs.dims(),
                    [b, 3],
                    "{kind}: last shape {:?}",
                    r.last.obs.dims()
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
        let start: OneStepState = random([b, 3], &device).into();
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
        assert_eq!(vec(state.obs), vec(r.last.obs));
    }

    #[test]
    fn sampled_cvae_rollout_is_reproducible_given_the_device_seed() {
        let (_guard, device) = seeded(3);
        let model = tiny_cvae(&device);
        let start: OneStepState = random([4, 3], &device).into();
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
        let start: OneStepState = random([b, 3], &device).into();
        let mut seen = Vec::new();
        let mut policy = |state: &OneStepState, obs: &Tensor<2>| {
            assert_eq!(
                vec(state.obs.clone()),
                vec(obs.clone()),
                "state = observation"
            );
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
        assert_eq!(seen[0], vec(start.obs));
        assert_eq!(seen[1], vec(r.obs.clone().narrow(1, 0, 1).reshape([b, 3])));
        assert_eq!(r.obs.dims(), [b, h, 3], "actual {:?}", r.obs.dims());
    }

    /// An ensemble whose log-stds are clamped below e^-10, so that a sample is its member's
    /// mean and the member behind each sampled row can be read off the prediction.
    fn sharp_ensemble(propagation: Propagation, device: &Device) -> AnyTransitionModel {
        materialise(
            TransitionModelConfig::Ensemble(EnsembleConfig {
                members: 4,
                hidden: vec![16],
                propagation,
                init_min_log_std: -12.0,
                init_max_log_std: -10.0,
                ..Default::default()
            })
            .init(&spec(), Normalizer::identity(3), device),
        )
    }

    /// Steps `h` sampled steps and returns, per step, the member whose mean each row's sample
    /// equals, and the last state.
    fn members_used(
        model: &AnyTransitionModel,
        start: OneStepState,
        h: usize,
        device: &Device,
    ) -> (Vec<Vec<usize>>, OneStepState) {
        let AnyTransitionModel::Ensemble(ensemble) = model else {
            panic!("not an ensemble: {}", model.kind())
        };
        let b = start.obs.dims()[0];
        let mut state = start;
        let mut used = Vec::new();
        for _ in 0..h {
            let action = random([b, 1], device);
            let means = vec(ensemble
                .member_outputs(state.obs.clone(), action.clone())
                .delta_mean);
            let (next, p) = model.step(&state, action, true);
            let delta = vec(p.obs - state.obs.clone());
            used.push(
                (0..b)
                    .map(|row| {
                        let distance = |m: usize| -> f32 {
                            (0..3)
                                .map(|o| (means[(m * b + row) * 3 + o] - delta[row * 3 + o]).abs())
                                .sum()
                        };
                        (0..4)
                            .min_by(|&i, &j| distance(i).total_cmp(&distance(j)))
                            .unwrap()
                    })
                    .collect(),
            );
            state = next;
        }
        (used, state)
    }

    #[test]
    fn ts_inf_keeps_each_rows_member_along_a_trajectory_and_ts1_does_not() {
        let (_guard, device) = seeded(10);
        let (b, h) = (32, 6);
        let model = sharp_ensemble(Propagation::TsInf, &device);
        let start = model.start(&Context::new(random([b, 3], &device)), true);
        assert!(start.member.is_none(), "start draws no member");
        let (used, last) = members_used(&model, start, h, &device);
        for t in 1..h {
            assert_eq!(used[t], used[0], "TS-inf: members changed at step {t}");
        }
        let carried: Vec<usize> = vec_int(last.member.expect("TS-inf carries its members"));
        assert_eq!(
            carried, used[0],
            "the state names the members that were used"
        );
        let mut distinct = used[0].clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 1, "every row on one member: {:?}", used[0]);

        let model = sharp_ensemble(Propagation::Ts1, &device);
        let start = model.start(&Context::new(random([b, 3], &device)), true);
        let (used, last) = members_used(&model, start, h, &device);
        assert!(last.member.is_none(), "TS-1 carries no member");
        let switched = (0..b)
            .filter(|&row| used.iter().any(|u| u[row] != used[0][row]))
            .count();
        assert!(
            switched > b / 2,
            "TS-1: only {switched} of {b} rows changed member: {used:?}"
        );
    }

    #[test]
    fn ensemble_state_repeats_its_members_and_central_steps_draw_none() {
        let (_guard, device) = seeded(11);
        let model = sharp_ensemble(Propagation::TsInf, &device);
        let start = model.start(&Context::new(random([2, 3], &device)), false);
        let (central, _) = model.step(&start, random([2, 1], &device), false);
        assert!(
            central.member.is_none(),
            "the central prediction draws no member"
        );
        let (sampled, _) = model.step(&start, random([2, 1], &device), true);
        let members = vec_int(sampled.member.clone().expect("drawn at the first sample"));
        let tiled = model.repeat(&sampled, 3);
        assert_eq!(tiled.obs.dims(), [6, 3], "actual {:?}", tiled.obs.dims());
        let want: Vec<usize> = members.iter().flat_map(|&m| [m, m, m]).collect();
        assert_eq!(vec_int(tiled.member.expect("tiled members")), want);
        let observed = model.observe_step(
            &sampled,
            random([2, 1], &device),
            random([2, 3], &device),
            false,
        );
        assert_eq!(vec_int(observed.member.expect("kept")), members);
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
        let (_, want) = model.step(&obs.clone().into(), action, false);
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
            &Tensor::<2>::zeros([2, 3], &device).into(),
            Tensor::zeros([2, 2], &device),
            false,
        );
    }
}
