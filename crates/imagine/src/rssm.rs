//! [`WorldModel`] for the RSSM: the latent state is `(h, z)`.

use burn::tensor::Tensor;
use wm_models::ActionSpec;
use wm_rssm::{Rssm, RssmState};

use crate::{Context, StepPrediction, WorldModel, check_action, repeat_rows};

/// - `start` runs [`Rssm::observe`] over the context's history (or over the current
///   observation alone, as the first step of an episode) and keeps the last posterior state:
///   its mode when `sample` is false (deterministic, the default of [`ModelEnv`](crate::ModelEnv)
///   with `sample: false`), a sample otherwise (as Dreamer starts imagination).
/// - `step` is one prior step ([`Rssm::img_step`]): `h' = GRU(h, [z, a])`, `z' ~ p(z' | h')`
///   (its mode when `sample` is false), then the decoder mean, the reward and the continue
///   probability of `(h', z')`. The observation is the decoder *mean* even when sampling: the
///   RSSM's stochasticity lives in `z`. `step_reward` skips the decoder
///   ([`Rssm::decode_reward_cont`]).
/// - `imagine` is the trait's one loop (one `img_step` of the whole batch per horizon step).
/// - `observation` decodes the state (a reconstruction, not the real observation).
impl WorldModel for Rssm {
    type State = RssmState;

    fn obs_dim(&self) -> usize {
        self.spec().obs_dim
    }

    fn action_spec(&self) -> &ActionSpec {
        &self.spec().action
    }

    fn start(&self, context: &Context, sample: bool) -> RssmState {
        match context.history() {
            Some(h) => {
                self.observe(
                    h.obs.clone(),
                    h.action.clone(),
                    h.is_first.clone(),
                    None,
                    sample,
                )
                .last
            }
            None => {
                let obs = context.obs().clone();
                let [b, o] = obs.dims();
                let device = obs.device();
                let w = self.action_spec().raw_width();
                self.observe(
                    obs.reshape([b, 1, o]),
                    Tensor::zeros([b, 1, w], &device),
                    Tensor::ones([b, 1], &device),
                    None,
                    sample,
                )
                .last
            }
        }
    }

    fn observe_step(
        &self,
        state: &RssmState,
        action: Tensor<2>,
        obs: Tensor<2>,
        sample: bool,
    ) -> RssmState {
        let b = state.batch_size();
        check_action(self.action_spec(), b, &action);
        let [ob, o] = obs.dims();
        assert_eq!(
            ob,
            b,
            "observation shape {:?}, expected [{b}, O]",
            obs.dims()
        );
        let w = action.dims()[1];
        let device = obs.device();
        self.observe(
            obs.reshape([b, 1, o]),
            action.reshape([b, 1, w]),
            Tensor::zeros([b, 1], &device),
            Some(state.clone()),
            sample,
        )
        .last
    }

    fn step(
        &self,
        state: &RssmState,
        action: Tensor<2>,
        sample: bool,
    ) -> (RssmState, StepPrediction) {
        check_action(self.action_spec(), state.batch_size(), &action);
        let next = self.img_step(state, action, sample);
        let decoded = self.decode(next.deter.clone(), next.stoch.clone());
        let prediction = StepPrediction {
            obs: decoded.obs,
            reward: decoded.reward,
            continue_prob: decoded.continue_prob,
        };
        (next, prediction)
    }

    fn step_reward(
        &self,
        state: &RssmState,
        action: Tensor<2>,
        sample: bool,
    ) -> (RssmState, Tensor<1>, Tensor<1>) {
        check_action(self.action_spec(), state.batch_size(), &action);
        let next = self.img_step(state, action, sample);
        let (reward, cont) = self.decode_reward_cont(next.deter.clone(), next.stoch.clone());
        (next, reward, cont)
    }

    fn device_of(&self, state: &RssmState) -> burn::tensor::Device {
        state.deter.device()
    }

    fn observation(&self, state: &RssmState) -> Tensor<2> {
        self.decode(state.deter.clone(), state.stoch.clone()).obs
    }

    fn batch_size(&self, state: &RssmState) -> usize {
        state.batch_size()
    }

    fn feature_dim(&self) -> usize {
        self.config().deter + self.stoch_width()
    }

    /// `[h, z]`, as the RSSM's own heads read it.
    fn features(&self, state: &RssmState) -> Tensor<2> {
        state.features()
    }

    /// The posterior states of [`Rssm::observe`] over the whole history, flattened.
    fn start_every_step(&self, context: &Context, sample: bool) -> RssmState {
        match context.history() {
            Some(h) => {
                let out = self.observe(
                    h.obs.clone(),
                    h.action.clone(),
                    h.is_first.clone(),
                    None,
                    sample,
                );
                let [b, t, d] = out.deter.dims();
                let s = out.stoch.dims()[2];
                RssmState {
                    deter: out.deter.reshape([b * t, d]),
                    stoch: out.stoch.reshape([b * t, s]),
                }
            }
            None => WorldModel::start(self, context, sample),
        }
    }

    fn repeat(&self, state: &RssmState, times: usize) -> RssmState {
        RssmState {
            deter: repeat_rows(state.deter.clone(), times),
            stoch: repeat_rows(state.stoch.clone(), times),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{seeded, vec};
    use crate::{ImagineActions, ModelEnv};
    use burn::tensor::{Device, Distribution};
    use wm_rssm::{LatentConfig, ModelSpec, RssmConfig};

    fn spec() -> ModelSpec {
        ModelSpec {
            obs_dim: 3,
            action: ActionSpec::Continuous {
                low: vec![-2.0],
                high: vec![2.0],
            },
        }
    }

    fn tiny(latent: LatentConfig) -> RssmConfig {
        RssmConfig {
            deter: 16,
            hidden: 16,
            latent,
            encoder_hidden: vec![16],
            decoder_hidden: vec![16],
            head_hidden: vec![16],
            ..RssmConfig::default()
        }
    }

    fn latents() -> [LatentConfig; 2] {
        [
            LatentConfig::Gaussian {
                size: 4,
                min_std: 0.1,
            },
            LatentConfig::Categorical {
                groups: 2,
                classes: 3,
                unimix: 0.01,
                estimator: Default::default(),
            },
        ]
    }

    fn actions(b: usize, h: usize, device: &Device) -> Tensor<3> {
        Tensor::random([b, h, 1], Distribution::Uniform(-2.0, 2.0), device)
    }

    fn history(b: usize, t: usize, device: &Device) -> Context {
        let mut is_first = vec![0.0f32; b * t];
        for i in 0..b {
            is_first[i * t] = 1.0;
        }
        Context::with_history(
            Tensor::random([b, t, 3], Distribution::Normal(0.0, 1.0), device),
            actions(b, t, device),
            Tensor::<1>::from_floats(is_first.as_slice(), device).reshape([b, t]),
        )
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{what}: {a:?} vs {b:?}"
            );
        }
    }

    #[test]
    fn rssm_starts_and_imagines_the_documented_shapes() {
        for latent in latents() {
            let (_guard, device) = seeded(11);
            let model = tiny(latent.clone()).init(&spec(), &device);
            let s = latent.stoch_width();
            let (b, h) = (4, 5);
            for context in [
                Context::new(Tensor::random(
                    [b, 3],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )),
                history(b, 6, &device),
            ] {
                for sample in [false, true] {
                    let start = model.start(&context, sample);
                    assert_eq!(
                        start.deter.dims(),
                        [b, 16],
                        "{latent:?}: deter {:?}",
                        start.deter.dims()
                    );
                    assert_eq!(
                        start.stoch.dims(),
                        [b, s],
                        "{latent:?}: stoch {:?}",
                        start.stoch.dims()
                    );
                    let r = WorldModel::imagine(
                        &model,
                        &start,
                        ImagineActions::Sequence(actions(b, h, &device)),
                        sample,
                    );
                    assert_eq!(
                        r.obs.dims(),
                        [b, h, 3],
                        "{latent:?}: obs {:?}",
                        r.obs.dims()
                    );
                    assert_eq!(
                        r.reward.dims(),
                        [b, h],
                        "{latent:?}: reward {:?}",
                        r.reward.dims()
                    );
                    assert_eq!(
                        r.continue_prob.dims(),
                        [b, h],
                        "{latent:?}: continue {:?}",
                        r.continue_prob.dims()
                    );
                    assert_eq!(
                        r.last.deter.dims(),
                        [b, 16],
                        "{latent:?}: last {:?}",
                        r.last.deter.dims()
                    );
                    let (_, p) = model.step(&start, actions(b, 1, &device).reshape([b, 1]), sample);
                    assert_eq!(
                        p.obs.dims(),
                        [b, 3],
                        "{latent:?}: step obs {:?}",
                        p.obs.dims()
                    );
                    assert_eq!(
                        p.reward.dims(),
                        [b],
                        "{latent:?}: step reward {:?}",
                        p.reward.dims()
                    );
                    assert_eq!(
                        p.continue_prob.dims(),
                        [b],
                        "{latent:?}: {:?}",
                        p.continue_prob.dims()
                    );
                    assert_eq!(model.observation(&start).dims(), [b, 3]);
                }
            }
        }
    }

    #[test]
    fn rssm_mode_imagine_equals_stepping_the_same_actions() {
        for latent in latents() {
            let (_guard, device) = seeded(12);
            let model = tiny(latent.clone()).init(&spec(), &device);
            let (b, h) = (3, 5);
            let start = model.start(&history(b, 4, &device), false);
            let seq = actions(b, h, &device);
            let r =
                WorldModel::imagine(&model, &start, ImagineActions::Sequence(seq.clone()), false);
            let mut state = start.clone();
            for t in 0..h {
                let (next, p) =
                    model.step(&state, seq.clone().narrow(1, t, 1).reshape([b, 1]), false);
                let at = |x: Tensor<2>| vec(x.narrow(1, t, 1).reshape([b]));
                close(
                    &vec(p.obs),
                    &vec(r.obs.clone().narrow(1, t, 1).reshape([b, 3])),
                    &format!("{latent:?} obs {t}"),
                );
                close(
                    &vec(p.reward),
                    &at(r.reward.clone()),
                    &format!("{latent:?} reward {t}"),
                );
                close(
                    &vec(p.continue_prob),
                    &at(r.continue_prob.clone()),
                    &format!("{latent:?} cont {t}"),
                );
                state = next;
            }
            close(&vec(state.deter), &vec(r.last.deter.clone()), "last deter");
            close(&vec(state.stoch), &vec(r.last.stoch.clone()), "last stoch");
            // The one loop agrees with the model's own batched rollout (all steps decoded at once).
            let batched = Rssm::imagine(&model, start.clone(), seq.clone(), false);
            close(
                &vec(r.obs.clone()),
                &vec(batched.obs),
                &format!("{latent:?} batched obs"),
            );
            close(
                &vec(r.reward.clone()),
                &vec(batched.reward),
                &format!("{latent:?} batched reward"),
            );
            // Planners' returns skip the decoder but equal the rollout's discounted return.
            close(
                &vec(model.discounted_returns(&start, seq, 0.9)),
                &vec(r.discounted_return(0.9)),
                &format!("{latent:?} returns"),
            );
        }
    }

    #[test]
    fn sampled_rssm_rollout_is_reproducible_given_the_device_seed_and_matches_stepping() {
        for latent in latents() {
            let (_guard, device) = seeded(13);
            let model = tiny(latent.clone()).init(&spec(), &device);
            let (b, h) = (3, 6);
            let context = history(b, 3, &device);
            let seq = actions(b, h, &device);
            let run = |seed| {
                device.seed(seed);
                let start = model.start(&context, true);
                let r = WorldModel::imagine(
                    &model,
                    &start,
                    ImagineActions::Sequence(seq.clone()),
                    true,
                );
                (vec(r.obs), vec(r.reward), vec(r.last.stoch))
            };
            let (x, y, z) = (run(21), run(21), run(22));
            assert_eq!(x, y, "{latent:?}: same seed, same rollout");
            assert_ne!(x.2, z.2, "{latent:?}: another seed, another rollout");
            // Stepping draws the same noise in the same order as the batched rollout.
            device.seed(21);
            let mut state = model.start(&context, true);
            let mut rewards = vec![Vec::new(); b];
            for t in 0..h {
                let (next, p) =
                    model.step(&state, seq.clone().narrow(1, t, 1).reshape([b, 1]), true);
                for (row, r) in vec(p.reward).into_iter().enumerate() {
                    rewards[row].push(r);
                }
                state = next;
            }
            close(
                &rewards.concat(),
                &x.1,
                &format!("{latent:?}: stepped rewards"),
            );
        }
    }

    #[test]
    fn observe_step_continues_the_posterior_like_observing_the_longer_history() {
        for latent in latents() {
            let (_guard, device) = seeded(14);
            let model = tiny(latent.clone()).init(&spec(), &device);
            let (b, t) = (2, 4);
            let context = history(b, t, &device);
            let h = context.history().unwrap().clone();
            let whole = model.start(&context, false);
            let prefix = Context::with_history(
                h.obs.clone().narrow(1, 0, t - 1),
                h.action.clone().narrow(1, 0, t - 1),
                h.is_first.clone().narrow(1, 0, t - 1),
            );
            let state = model.start(&prefix, false);
            let next = model.observe_step(
                &state,
                h.action.clone().narrow(1, t - 1, 1).reshape([b, 1]),
                h.obs.clone().narrow(1, t - 1, 1).reshape([b, 3]),
                false,
            );
            close(
                &vec(next.deter),
                &vec(whole.deter),
                &format!("{latent:?} deter"),
            );
            close(
                &vec(next.stoch),
                &vec(whole.stoch),
                &format!("{latent:?} stoch"),
            );
        }
    }

    #[test]
    fn rssm_repeat_tiles_both_parts_of_the_state_row_major() {
        let (_guard, device) = seeded(15);
        let model = tiny(latents()[0].clone()).init(&spec(), &device);
        let start = model.start(&history(2, 2, &device), false);
        let tiled = model.repeat(&start, 3);
        assert_eq!(
            tiled.deter.dims(),
            [6, 16],
            "actual {:?}",
            tiled.deter.dims()
        );
        assert_eq!(
            tiled.stoch.dims(),
            [6, 4],
            "actual {:?}",
            tiled.stoch.dims()
        );
        let (d, dt) = (vec(start.deter.clone()), vec(tiled.deter.clone()));
        for row in 0..6 {
            let src = row / 3;
            assert_eq!(
                dt[row * 16..(row + 1) * 16],
                d[src * 16..(src + 1) * 16],
                "row {row}"
            );
        }
        // Tiled states imagine identically in mode.
        let seq = actions(2, 3, &device);
        let one = WorldModel::imagine(&model, &start, ImagineActions::Sequence(seq.clone()), false);
        let three = WorldModel::imagine(
            &model,
            &tiled,
            ImagineActions::Sequence(repeat_rows(seq, 3)),
            false,
        );
        close(
            &vec(repeat_rows(one.reward, 3)),
            &vec(three.reward),
            "tiled rewards",
        );
    }

    #[test]
    fn rssm_policy_imagine_calls_the_policy_with_decoded_observations() {
        let (_guard, device) = seeded(16);
        let model = tiny(latents()[1].clone()).init(&spec(), &device);
        let (b, h) = (2, 4);
        let start = model.start(&history(b, 2, &device), false);
        let mut seen = Vec::new();
        let mut policy = |state: &RssmState, obs: &Tensor<2>| {
            seen.push(vec(obs.clone()));
            state.deter.clone().narrow(1, 0, 1).tanh()
        };
        let r = WorldModel::imagine(
            &model,
            &start,
            ImagineActions::Policy {
                horizon: h,
                policy: &mut policy,
            },
            false,
        );
        assert_eq!(seen.len(), h);
        assert_eq!(seen[0], vec(model.observation(&start)));
        close(
            &seen[2],
            &vec(r.obs.clone().narrow(1, 1, 1).reshape([b, 3])),
            "obs after step 1",
        );
        assert_eq!(r.obs.dims(), [b, h, 3], "actual {:?}", r.obs.dims());
    }

    #[test]
    fn model_env_over_the_rssm_hides_the_latent_state() {
        let (_guard, device) = seeded(17);
        let model = tiny(latents()[0].clone()).init(&spec(), &device);
        let mut env = ModelEnv::new(model.clone(), false);
        let context = history(2, 3, &device);
        let obs = env.reset(context.clone());
        assert_eq!(
            vec(obs),
            vec(context.obs().clone()),
            "reset returns the real observations"
        );
        let seq = actions(2, 3, &device);
        let mut rewards = Vec::new();
        for t in 0..3 {
            let s = env.step(seq.clone().narrow(1, t, 1).reshape([2, 1]));
            assert_eq!(s.obs.dims(), [2, 3], "actual {:?}", s.obs.dims());
            assert_eq!(s.done.len(), 2);
            rewards.push(s.reward);
        }
        let want = WorldModel::imagine(
            &model,
            &model.start(&context, false),
            ImagineActions::Sequence(seq),
            false,
        );
        close(
            &vec(Tensor::stack::<2>(rewards, 1)),
            &vec(want.reward),
            "env rewards",
        );
    }
}
