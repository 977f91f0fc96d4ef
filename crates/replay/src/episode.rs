//! Episodes: the unit the buffer stores, evicts and persists.
//!
//! An episode of `T` transitions holds `T + 1` observations and `T` actions and rewards,
//! all as flat row-major `f32`:
//!
//! ```text
//! obs:      o0   o1   o2  ...  oT        (T+1) * obs_dim values
//! actions:     a0   a1  ...  a(T-1)      T * action_width values; a_k leads from o_k to o_(k+1)
//! rewards:     r0   r1  ...  r(T-1)      T values; r_k is received on arriving at o_(k+1)
//! ```
//!
//! `terminated` and `truncated` describe the last step (Gymnasium semantics): `terminated`
//! means `oT` is a terminal state (no future reward; value bootstrapping must stop),
//! `truncated` means the episode was cut (time limit) and `oT` is an ordinary state.
//! Discrete actions are stored as the index converted to `f32` (width 1).

use crate::error::{ReplayError, Result};
use wm_envs::Space;

/// What a buffer stores: the observation width and the action space.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplaySpec {
    /// Number of `f32` values per observation.
    pub obs_dim: usize,
    /// The environment's action space; fixes the action width and, for discrete spaces,
    /// the valid indices.
    pub action_space: Space,
}

impl ReplaySpec {
    /// A spec for observations of `obs_dim` values and actions from `action_space`.
    pub fn new(obs_dim: usize, action_space: Space) -> Self {
        Self {
            obs_dim,
            action_space,
        }
    }

    /// Number of `f32` values per stored action (`Box`: its dimension; `Discrete`: 1).
    pub fn action_width(&self) -> usize {
        self.action_space.width()
    }

    /// Checks that episodes can be stored under this spec: `obs_dim >= 1`, a non-empty
    /// action space, and `Box` bounds of equal length.
    pub fn validate(&self) -> Result<()> {
        if self.obs_dim == 0 {
            return Err(ReplayError::InvalidSpec {
                reason: "obs_dim is 0; observations need at least one value".to_string(),
            });
        }
        match &self.action_space {
            Space::Box { low, high } => {
                if low.len() != high.len() {
                    return Err(ReplayError::InvalidSpec {
                        reason: format!(
                            "the Box action space has {} lower bounds but {} upper bounds",
                            low.len(),
                            high.len()
                        ),
                    });
                }
                if low.is_empty() {
                    return Err(ReplayError::InvalidSpec {
                        reason: "the Box action space has no dimensions".to_string(),
                    });
                }
            }
            Space::Discrete { n } => {
                if *n == 0 {
                    return Err(ReplayError::InvalidSpec {
                        reason: "the Discrete action space has n = 0 choices".to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// One complete episode (see the module docs for the layout).
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// `(T + 1) * obs_dim` values: observations `o0 ..= oT`, row-major.
    pub obs: Vec<f32>,
    /// `T * action_width` values: action `a_k` was taken in `o_k` and led to `o_(k+1)`.
    pub actions: Vec<f32>,
    /// `T` values: `r_k` was received on the transition `o_k -> o_(k+1)`.
    pub rewards: Vec<f32>,
    /// The final observation `oT` is a terminal state.
    pub terminated: bool,
    /// The episode was cut short (time limit); `oT` is not terminal.
    pub truncated: bool,
}

impl Episode {
    /// Number of transitions `T`.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    /// True when the episode has no transitions (such an episode fails [`Episode::validate`]).
    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    /// Number of observations, `T + 1`.
    pub fn n_observations(&self) -> usize {
        self.len() + 1
    }

    /// Observation `index` (`0 ..= T`), given the spec's `obs_dim`.
    ///
    /// Panics if `index > T` or the episode does not match `obs_dim` (validate it first).
    pub fn observation(&self, obs_dim: usize, index: usize) -> &[f32] {
        &self.obs[index * obs_dim..(index + 1) * obs_dim]
    }

    /// Action `index` (`0 .. T`), given the spec's action width.
    ///
    /// Panics if `index >= T` or the episode does not match `action_width` (validate it first).
    pub fn action(&self, action_width: usize, index: usize) -> &[f32] {
        &self.actions[index * action_width..(index + 1) * action_width]
    }

    /// Checks the episode against `spec`: at least one transition, field lengths consistent
    /// with `T`, all values finite, discrete actions valid indices.
    pub fn validate(&self, spec: &ReplaySpec) -> Result<()> {
        let transitions = self.len();
        let invalid = |reason: String| ReplayError::InvalidEpisode { reason };
        if transitions == 0 {
            return Err(invalid(
                "the episode has no transitions (rewards is empty); an episode needs at least one step"
                    .to_string(),
            ));
        }
        let obs_dim = spec.obs_dim;
        let action_width = spec.action_width();
        let expected_obs_values = (transitions + 1) * obs_dim;
        if self.obs.len() != expected_obs_values {
            return Err(invalid(format!(
                "obs has {} values, expected {expected_obs_values} = (T + 1) * obs_dim = ({transitions} + 1) * {obs_dim}, \
                 with T = {transitions} taken from rewards.len()",
                self.obs.len()
            )));
        }
        let expected_action_values = transitions * action_width;
        if self.actions.len() != expected_action_values {
            return Err(invalid(format!(
                "actions has {} values, expected {expected_action_values} = T * action_width = {transitions} * {action_width}, \
                 with T = {transitions} taken from rewards.len()",
                self.actions.len()
            )));
        }
        for (index, observation) in self.obs.chunks_exact(obs_dim).enumerate() {
            check_observation_values(observation)
                .map_err(|problem| invalid(format!("observation {index}: {problem}")))?;
        }
        for (index, action) in self.actions.chunks_exact(action_width).enumerate() {
            check_action_values(action, &spec.action_space)
                .map_err(|problem| invalid(format!("action {index}: {problem}")))?;
        }
        for (index, reward) in self.rewards.iter().enumerate() {
            check_reward_value(*reward)
                .map_err(|problem| invalid(format!("reward {index}: {problem}")))?;
        }
        Ok(())
    }
}

/// Builds an [`Episode`] step by step while an environment runs, checking every value on
/// the way in so that errors point at the step that caused them.
///
/// ```
/// # use wm_replay::{EpisodeBuilder, ReplaySpec, Space};
/// # fn demo() -> Result<(), wm_replay::ReplayError> {
/// let spec = ReplaySpec::new(2, Space::Discrete { n: 2 });
/// let mut builder = EpisodeBuilder::new(&spec, &[0.0, 0.0])?;
/// builder.push(&[1.0], 1.0, &[0.5, 0.5])?;
/// let episode = builder.finish(true, false)?;
/// assert_eq!(episode.len(), 1);
/// # Ok(()) }
/// # demo().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct EpisodeBuilder {
    spec: ReplaySpec,
    obs: Vec<f32>,
    actions: Vec<f32>,
    rewards: Vec<f32>,
}

impl EpisodeBuilder {
    /// Starts an episode at the observation returned by `reset`.
    pub fn new(spec: &ReplaySpec, first_obs: &[f32]) -> Result<Self> {
        spec.validate()?;
        check_observation_width(first_obs, spec.obs_dim)
            .and_then(|()| check_observation_values(first_obs))
            .map_err(|problem| ReplayError::InvalidEpisode {
                reason: format!("first observation: {problem}"),
            })?;
        Ok(Self {
            spec: spec.clone(),
            obs: first_obs.to_vec(),
            actions: Vec::new(),
            rewards: Vec::new(),
        })
    }

    /// Records one environment step: `action` taken in the current observation, the
    /// `reward` received, and the observation `next_obs` it led to. On error nothing is
    /// recorded, so the builder stays consistent.
    pub fn push(&mut self, action: &[f32], reward: f32, next_obs: &[f32]) -> Result<()> {
        let step = self.rewards.len();
        let action_width = self.spec.action_width();
        let invalid = |problem: String| ReplayError::InvalidStep {
            step,
            reason: problem,
        };
        if action.len() != action_width {
            return Err(invalid(format!(
                "action has {} values, expected {action_width} (action_width)",
                action.len()
            )));
        }
        check_action_values(action, &self.spec.action_space)
            .map_err(|problem| invalid(format!("action: {problem}")))?;
        check_reward_value(reward).map_err(|problem| invalid(format!("reward: {problem}")))?;
        check_observation_width(next_obs, self.spec.obs_dim)
            .and_then(|()| check_observation_values(next_obs))
            .map_err(|problem| invalid(format!("next observation: {problem}")))?;
        self.actions.extend_from_slice(action);
        self.rewards.push(reward);
        self.obs.extend_from_slice(next_obs);
        Ok(())
    }

    /// Number of transitions pushed so far.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    /// True before the first [`push`](Self::push).
    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    /// The most recent observation (the first one before any push).
    pub fn last_observation(&self) -> &[f32] {
        &self.obs[self.obs.len() - self.spec.obs_dim..]
    }

    /// Ends the episode. `terminated`/`truncated` describe the last step. Fails if no step
    /// was pushed.
    pub fn finish(self, terminated: bool, truncated: bool) -> Result<Episode> {
        if self.rewards.is_empty() {
            return Err(ReplayError::InvalidEpisode {
                reason: "cannot finish an episode with no transitions; push at least one step"
                    .to_string(),
            });
        }
        let mut episode = Episode {
            obs: self.obs,
            actions: self.actions,
            rewards: self.rewards,
            terminated,
            truncated,
        };
        // Growth while pushing leaves up to 2x spare capacity; the buffer's memory bound
        // (bytes proportional to what is stored) relies on dropping it.
        episode.obs.shrink_to_fit();
        episode.actions.shrink_to_fit();
        episode.rewards.shrink_to_fit();
        Ok(episode)
    }
}

fn check_observation_width(observation: &[f32], obs_dim: usize) -> std::result::Result<(), String> {
    if observation.len() != obs_dim {
        return Err(format!(
            "observation has {} values, expected {obs_dim} (obs_dim)",
            observation.len()
        ));
    }
    Ok(())
}

fn check_observation_values(observation: &[f32]) -> std::result::Result<(), String> {
    match observation.iter().position(|value| !value.is_finite()) {
        Some(position) => Err(format!(
            "value {position} is {} (observations must be finite)",
            observation[position]
        )),
        None => Ok(()),
    }
}

fn check_action_values(action: &[f32], action_space: &Space) -> std::result::Result<(), String> {
    if let Some(position) = action.iter().position(|value| !value.is_finite()) {
        return Err(format!(
            "value {position} is {} (actions must be finite)",
            action[position]
        ));
    }
    // Box actions are not checked against their bounds: exploration noise may push them
    // outside, and the environment (not the buffer) decides how to clip.
    if let Space::Discrete { n } = action_space {
        let index = action[0];
        if index.fract() != 0.0 || index < 0.0 || index >= *n as f32 {
            return Err(format!(
                "{index} is not a valid index for a Discrete action space with n = {n} \
                 (expected an integer in 0..{n})"
            ));
        }
    }
    Ok(())
}

fn check_reward_value(reward: f32) -> std::result::Result<(), String> {
    if !reward.is_finite() {
        return Err(format!("{reward} is not finite"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cartpole_like_spec() -> ReplaySpec {
        ReplaySpec::new(4, Space::Discrete { n: 2 })
    }

    #[test]
    fn builder_produces_aligned_episode() {
        let spec = cartpole_like_spec();
        let mut builder =
            EpisodeBuilder::new(&spec, &[0.0, 0.1, 0.2, 0.3]).expect("valid first obs");
        builder
            .push(&[1.0], 1.0, &[1.0, 1.1, 1.2, 1.3])
            .expect("valid step");
        builder
            .push(&[0.0], 0.5, &[2.0, 2.1, 2.2, 2.3])
            .expect("valid step");
        assert_eq!(builder.last_observation(), &[2.0, 2.1, 2.2, 2.3]);
        let episode = builder.finish(true, false).expect("two steps");
        assert_eq!(episode.len(), 2);
        assert_eq!(episode.n_observations(), 3);
        assert_eq!(episode.observation(4, 1), &[1.0, 1.1, 1.2, 1.3]);
        assert_eq!(episode.actions, vec![1.0, 0.0]);
        assert_eq!(episode.rewards, vec![1.0, 0.5]);
        assert!(episode.terminated && !episode.truncated);
        episode.validate(&spec).expect("builder output is valid");
    }

    #[test]
    fn wrong_observation_width_names_expected_obs_dim() {
        let spec = cartpole_like_spec();
        let error =
            EpisodeBuilder::new(&spec, &[0.0, 0.0, 0.0]).expect_err("3 values for obs_dim 4");
        assert!(
            error
                .to_string()
                .contains("observation has 3 values, expected 4 (obs_dim)"),
            "{error}"
        );
        let mut builder = EpisodeBuilder::new(&spec, &[0.0; 4]).expect("valid");
        let error = builder.push(&[0.0], 1.0, &[0.0; 5]).expect_err("5 values");
        assert!(error.to_string().contains("step 0"), "{error}");
        assert!(
            error.to_string().contains("5 values, expected 4"),
            "{error}"
        );
        assert!(builder.is_empty(), "a rejected push must not be recorded");
    }

    #[test]
    fn invalid_discrete_action_index_is_rejected() {
        let spec = cartpole_like_spec();
        let mut builder = EpisodeBuilder::new(&spec, &[0.0; 4]).expect("valid");
        for bad_action in [2.0, -1.0, 0.5] {
            let error = builder
                .push(&[bad_action], 0.0, &[0.0; 4])
                .expect_err("not an index in 0..2");
            assert!(error.to_string().contains("Discrete"), "{error}");
        }
        builder
            .push(&[1.0], 0.0, &[0.0; 4])
            .expect("index 1 is valid");
    }

    #[test]
    fn non_finite_values_are_rejected() {
        let spec = ReplaySpec::new(
            1,
            Space::Box {
                low: vec![-2.0],
                high: vec![2.0],
            },
        );
        let mut builder = EpisodeBuilder::new(&spec, &[0.0]).expect("valid");
        assert!(builder.push(&[f32::NAN], 0.0, &[0.0]).is_err());
        assert!(builder.push(&[0.0], f32::INFINITY, &[0.0]).is_err());
        assert!(builder.push(&[0.0], 0.0, &[f32::NEG_INFINITY]).is_err());
        // Out-of-bounds Box actions are allowed (clipping is the environment's business).
        builder
            .push(&[3.0], 0.0, &[0.0])
            .expect("out-of-bounds but finite");
    }

    #[test]
    fn finishing_an_empty_episode_is_an_error() {
        let spec = cartpole_like_spec();
        let builder = EpisodeBuilder::new(&spec, &[0.0; 4]).expect("valid");
        assert!(builder.finish(false, true).is_err());
    }

    #[test]
    fn validate_reports_inconsistent_lengths() {
        let spec = cartpole_like_spec();
        let episode = Episode {
            obs: vec![0.0; 8], // 2 observations, but 2 rewards imply 3
            actions: vec![0.0, 1.0],
            rewards: vec![1.0, 1.0],
            terminated: false,
            truncated: false,
        };
        let error = episode.validate(&spec).expect_err("obs too short");
        assert!(
            error.to_string().contains("obs has 8 values, expected 12"),
            "{error}"
        );

        let episode = Episode {
            obs: vec![0.0; 12],
            actions: vec![0.0],
            ..episode
        };
        let error = episode.validate(&spec).expect_err("actions too short");
        assert!(
            error
                .to_string()
                .contains("actions has 1 values, expected 2"),
            "{error}"
        );
    }

    #[test]
    fn invalid_specs_are_rejected() {
        assert!(
            ReplaySpec::new(0, Space::Discrete { n: 2 })
                .validate()
                .is_err()
        );
        assert!(
            ReplaySpec::new(3, Space::Discrete { n: 0 })
                .validate()
                .is_err()
        );
        assert!(
            ReplaySpec::new(
                3,
                Space::Box {
                    low: vec![0.0],
                    high: vec![]
                }
            )
            .validate()
            .is_err()
        );
        assert!(
            ReplaySpec::new(
                3,
                Space::Box {
                    low: vec![],
                    high: vec![]
                }
            )
            .validate()
            .is_err()
        );
        ReplaySpec::new(
            3,
            Space::Box {
                low: vec![-1.0],
                high: vec![1.0],
            },
        )
        .validate()
        .expect("valid");
    }
}
