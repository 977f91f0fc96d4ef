//! [`AnyModel`] as one [`WorldModel`], so that code acting or imagining with whatever model a
//! config names (the rollout workers, `wm bench acting`) is generic over the trait and never
//! matches on the model kind: the match lives here, once per method.

use burn::tensor::{Device, Tensor};
use wm_imagine::{Context, OneStepState, StepPrediction, WorldModel};
use wm_models::ActionSpec;
use wm_rssm::RssmState;

use crate::model::AnyModel;

/// The state of an [`AnyModel`]: a one-step model's observation `[B, O]` (with the ensemble's
/// member assignment, [`OneStepState`]), or the RSSM's `(h, z)`.
#[derive(Clone, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a handful of values per process (one per model or worker), never stored in bulk"
)]
pub enum AnyState {
    /// A one-step model's state: the observation `[B, O]` and, for a TS-∞ ensemble, the
    /// member of each row.
    Obs(OneStepState),
    /// The RSSM's state.
    Rssm(RssmState),
}

/// The match of a model with a state of its own kind; another pairing is a bug of the caller
/// (states are only made by the model that steps them).
macro_rules! dispatch {
    ($model:expr, $state:expr, |$m:ident, $s:ident| $body:expr) => {
        match ($model, $state) {
            (AnyModel::Transition($m), AnyState::Obs($s)) => $body,
            (AnyModel::Rssm($m), AnyState::Rssm($s)) => $body,
            (model, _) => panic!(
                "a {} model was given the state of another kind of model",
                model.kind()
            ),
        }
    };
}

impl WorldModel for AnyModel {
    type State = AnyState;

    fn obs_dim(&self) -> usize {
        match self {
            AnyModel::Transition(m) => m.obs_dim(),
            AnyModel::Rssm(m) => m.obs_dim(),
        }
    }

    fn action_spec(&self) -> &ActionSpec {
        match self {
            AnyModel::Transition(m) => m.action_spec(),
            AnyModel::Rssm(m) => m.action_spec(),
        }
    }

    fn start(&self, context: &Context, sample: bool) -> AnyState {
        match self {
            AnyModel::Transition(m) => AnyState::Obs(m.start(context, sample)),
            AnyModel::Rssm(m) => AnyState::Rssm(WorldModel::start(m, context, sample)),
        }
    }

    fn observe_step(
        &self,
        state: &AnyState,
        action: Tensor<2>,
        obs: Tensor<2>,
        sample: bool,
    ) -> AnyState {
        match (self, state) {
            (AnyModel::Transition(m), AnyState::Obs(s)) => {
                AnyState::Obs(m.observe_step(s, action, obs, sample))
            }
            (AnyModel::Rssm(m), AnyState::Rssm(s)) => {
                AnyState::Rssm(m.observe_step(s, action, obs, sample))
            }
            (model, _) => panic!(
                "a {} model was given the state of another kind of model",
                model.kind()
            ),
        }
    }

    fn step(
        &self,
        state: &AnyState,
        action: Tensor<2>,
        sample: bool,
    ) -> (AnyState, StepPrediction) {
        match (self, state) {
            (AnyModel::Transition(m), AnyState::Obs(s)) => {
                let (next, prediction) = m.step(s, action, sample);
                (AnyState::Obs(next), prediction)
            }
            (AnyModel::Rssm(m), AnyState::Rssm(s)) => {
                let (next, prediction) = m.step(s, action, sample);
                (AnyState::Rssm(next), prediction)
            }
            (model, _) => panic!(
                "a {} model was given the state of another kind of model",
                model.kind()
            ),
        }
    }

    fn step_reward(
        &self,
        state: &AnyState,
        action: Tensor<2>,
        sample: bool,
    ) -> (AnyState, Tensor<1>, Tensor<1>) {
        match (self, state) {
            (AnyModel::Transition(m), AnyState::Obs(s)) => {
                let (next, reward, cont) = m.step_reward(s, action, sample);
                (AnyState::Obs(next), reward, cont)
            }
            (AnyModel::Rssm(m), AnyState::Rssm(s)) => {
                let (next, reward, cont) = m.step_reward(s, action, sample);
                (AnyState::Rssm(next), reward, cont)
            }
            (model, _) => panic!(
                "a {} model was given the state of another kind of model",
                model.kind()
            ),
        }
    }

    fn device_of(&self, state: &AnyState) -> Device {
        dispatch!(self, state, |m, s| m.device_of(s))
    }

    fn observation(&self, state: &AnyState) -> Tensor<2> {
        dispatch!(self, state, |m, s| m.observation(s))
    }

    fn batch_size(&self, state: &AnyState) -> usize {
        dispatch!(self, state, |m, s| m.batch_size(s))
    }

    fn feature_dim(&self) -> usize {
        match self {
            AnyModel::Transition(m) => m.feature_dim(),
            AnyModel::Rssm(m) => m.feature_dim(),
        }
    }

    fn features(&self, state: &AnyState) -> Tensor<2> {
        dispatch!(self, state, |m, s| m.features(s))
    }

    fn start_every_step(&self, context: &Context, sample: bool) -> AnyState {
        match self {
            AnyModel::Transition(m) => AnyState::Obs(m.start_every_step(context, sample)),
            AnyModel::Rssm(m) => AnyState::Rssm(m.start_every_step(context, sample)),
        }
    }

    fn repeat(&self, state: &AnyState, times: usize) -> AnyState {
        match (self, state) {
            (AnyModel::Transition(m), AnyState::Obs(s)) => AnyState::Obs(m.repeat(s, times)),
            (AnyModel::Rssm(m), AnyState::Rssm(s)) => AnyState::Rssm(m.repeat(s, times)),
            (model, _) => panic!(
                "a {} model was given the state of another kind of model",
                model.kind()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use burn::tensor::{Distribution, TensorData};
    use wm_imagine::{ImagineActions, Rollout};
    use wm_models::{DeterministicMlpConfig, ModelSpec, Normalizer};
    use wm_rssm::RssmConfig;

    fn models(device: &Device) -> Vec<AnyModel> {
        let spec = ModelSpec {
            obs_dim: 3,
            action: ActionSpec::Continuous {
                low: vec![-2.0],
                high: vec![2.0],
            },
        };
        let rssm = RssmConfig {
            deter: 8,
            hidden: 8,
            encoder_hidden: vec![8],
            decoder_hidden: vec![8],
            head_hidden: vec![8],
            ..RssmConfig::default()
        };
        vec![
            ModelConfig::Deterministic(DeterministicMlpConfig {
                hidden: vec![8],
                ..Default::default()
            })
            .init(&spec, Normalizer::identity(3), device),
            ModelConfig::Rssm(rssm).init(&spec, Normalizer::identity(3), device),
        ]
    }

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32")
    }

    fn obs_reward<S>(rollout: Rollout<S>) -> (Vec<f32>, Vec<f32>) {
        (host(rollout.obs), host(rollout.reward))
    }

    #[test]
    fn any_model_imagines_and_scores_like_its_inner_model() {
        let device = wm_backend::test_device();
        for model in models(&device) {
            let obs = Tensor::<2>::from_data(
                TensorData::new(vec![0.5, -0.5, 1.0, 0.0, 1.0, -1.0], [2, 3]),
                &device,
            );
            let actions = Tensor::<3>::random([2, 4, 1], Distribution::Uniform(-2.0, 2.0), &device);
            let start = model.start(&Context::new(obs.clone()), false);
            let state = model.observe_step(
                &start,
                Tensor::from_floats([[1.0], [-1.0]], &device),
                obs.clone(),
                false,
            );
            let any = model.imagine(&state, ImagineActions::Sequence(actions.clone()), false);
            let returns = host(model.discounted_returns(&state, actions.clone(), 0.9));
            let (inner_rollout, inner_returns) = match (&model, &state) {
                (AnyModel::Transition(m), AnyState::Obs(s)) => (
                    obs_reward(m.imagine(s, ImagineActions::Sequence(actions.clone()), false)),
                    host(m.discounted_returns(s, actions, 0.9)),
                ),
                (AnyModel::Rssm(m), AnyState::Rssm(s)) => (
                    obs_reward(WorldModel::imagine(
                        m,
                        s,
                        ImagineActions::Sequence(actions.clone()),
                        false,
                    )),
                    host(m.discounted_returns(s, actions, 0.9)),
                ),
                _ => panic!("{}: the state of another kind", model.kind()),
            };
            assert_eq!(
                (host(any.obs.clone()), host(any.reward.clone())),
                inner_rollout,
                "{}",
                model.kind()
            );
            assert_eq!(returns, inner_returns, "{}", model.kind());
            let from_rollout = host(any.discounted_return(0.9));
            assert!(
                from_rollout
                    .iter()
                    .zip(&returns)
                    .all(|(a, b)| (a - b).abs() < 1e-5),
                "{}: {from_rollout:?} vs {returns:?}",
                model.kind()
            );
            assert_eq!(model.batch_size(&model.repeat(&state, 3)), 6);
            assert_eq!(
                model.features(&state).dims(),
                [2, model.feature_dim()],
                "{}",
                model.kind()
            );
        }
    }
}
