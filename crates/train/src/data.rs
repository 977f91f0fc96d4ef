//! Data: collecting episodes from an environment into a replay buffer, the specs that tie the
//! environment to the model and the buffer, and turning host batches into tensors.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wm_envs::{Env, EnvError, Space};
use wm_models::{ActionSpec, ModelSpec, TransitionTensors};
use wm_replay::{EpisodeBuilder, ReplayBuffer, ReplayError, ReplaySpec, TransitionBatch};

/// Errors while collecting data.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The environment refused a step or could not be made.
    #[error("collecting from {env}: {source}")]
    Env {
        /// The environment id.
        env: String,
        /// The environment's error.
        source: EnvError,
    },
    /// The replay buffer refused an episode or failed to persist it.
    #[error("storing a collected episode: {0}")]
    Replay(#[from] ReplayError),
}

/// What a collection run gathered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CollectStats {
    /// Episodes finished and stored.
    pub episodes: usize,
    /// Environment steps taken.
    pub steps: usize,
    /// Episodes that ended by termination (not truncation).
    pub terminated: usize,
}

/// The replay buffer's spec for an environment.
pub fn replay_spec(env: &dyn Env) -> ReplaySpec {
    ReplaySpec::new(env.observation_space().width(), env.action_space())
}

/// The model's spec for an environment.
pub fn model_spec(env: &dyn Env) -> ModelSpec {
    let action = match env.action_space() {
        Space::Discrete { n } => ActionSpec::Discrete { n },
        Space::Box { low, high } => ActionSpec::Continuous { low, high },
    };
    ModelSpec {
        obs_dim: env.observation_space().width(),
        action,
    }
}

/// Steps `env` with uniformly random actions and stores whole episodes in `buffer` until at
/// least `min_steps` steps were taken (the prefill and the held-out episodes are always random,
/// whatever the workers act with, so every model is evaluated on the same kind of data). The first reset uses `seed`; later resets continue its random stream, as
/// in Gymnasium, so the same seed gives the same episodes.
pub fn collect_episodes(
    env: &mut dyn Env,
    seed: u64,
    min_steps: usize,
    buffer: &mut ReplayBuffer,
) -> Result<CollectStats, CollectError> {
    let env_error = |env: &dyn Env| {
        let id = env.id().to_string();
        move |source| CollectError::Env { env: id, source }
    };
    let spec = buffer.spec().clone();
    let action_space = env.action_space();
    #[allow(
        clippy::unusual_byte_groupings,
        reason = "the digits spell a word; changing the constant would change every seeded run"
    )]
    let mut policy_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0f_a11_ac7);
    let mut stats = CollectStats::default();
    let mut reset_seed = Some(seed);
    while stats.steps < min_steps {
        let obs = env.reset(reset_seed.take());
        let mut episode = EpisodeBuilder::new(&spec, &obs)?;
        loop {
            let action = action_space.sample(&mut policy_rng);
            let step = env.step(&action).map_err(env_error(env))?;
            episode.push(&action.to_f32_vec(), step.reward as f32, &step.obs)?;
            stats.steps += 1;
            if step.terminated || step.truncated {
                stats.terminated += usize::from(step.terminated);
                buffer.insert(episode.finish(step.terminated, step.truncated)?)?;
                stats.episodes += 1;
                break;
            }
        }
    }
    Ok(stats)
}

/// Every transition of a buffer, flattened in episode order (for evaluation and normalisation).
pub fn all_transitions(buffer: &ReplayBuffer, limit: usize) -> TransitionBatch {
    let spec = buffer.spec();
    let (obs_dim, action_width) = (spec.obs_dim, spec.action_width());
    let mut batch = TransitionBatch {
        batch_size: 0,
        obs_dim,
        action_width,
        obs: Vec::new(),
        actions: Vec::new(),
        rewards: Vec::new(),
        next_obs: Vec::new(),
        terminated: Vec::new(),
    };
    'episodes: for episode in buffer.episodes() {
        for t in 0..episode.len() {
            if batch.batch_size == limit {
                break 'episodes;
            }
            batch.obs.extend_from_slice(episode.observation(obs_dim, t));
            batch
                .actions
                .extend_from_slice(episode.action(action_width, t));
            batch.rewards.push(episode.rewards[t]);
            batch
                .next_obs
                .extend_from_slice(episode.observation(obs_dim, t + 1));
            batch
                .terminated
                .push(if episode.terminated && t + 1 == episode.len() {
                    1.0
                } else {
                    0.0
                });
            batch.batch_size += 1;
        }
    }
    batch
}

/// The rows `range` of a flat batch, as tensors on `device`.
pub fn to_tensors(
    batch: &TransitionBatch,
    range: std::ops::Range<usize>,
    device: &wm_backend::Device,
) -> TransitionTensors {
    let (o, a) = (batch.obs_dim, batch.action_width);
    TransitionTensors::from_host(
        &batch.obs[range.start * o..range.end * o],
        &batch.actions[range.start * a..range.end * a],
        &batch.next_obs[range.start * o..range.end * o],
        &batch.rewards[range.clone()],
        &batch.terminated[range.clone()],
        range.len(),
        o,
        a,
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_stores_whole_episodes_and_is_reproducible() {
        let collect = |seed| {
            let mut env = wm_envs::make("cartpole").expect("cartpole");
            let mut buffer = ReplayBuffer::new(replay_spec(env.as_ref()), 10_000).expect("buffer");
            let stats = collect_episodes(env.as_mut(), seed, 200, &mut buffer).expect("collect");
            (stats, buffer.episodes().cloned().collect::<Vec<_>>())
        };
        let (stats, episodes) = collect(3);
        assert!(
            stats.steps >= 200 && stats.episodes == episodes.len(),
            "{stats:?}"
        );
        assert_eq!(stats.steps, episodes.iter().map(|e| e.len()).sum::<usize>());
        assert_eq!(
            stats.terminated, stats.episodes,
            "random CartPole episodes end by termination"
        );
        assert_eq!(collect(3).1, episodes, "same seed, same episodes");
        assert_ne!(collect(4).1, episodes, "another seed, other episodes");
    }

    #[test]
    fn all_transitions_marks_only_the_last_step_of_terminated_episodes() {
        let mut env = wm_envs::make("cartpole").expect("cartpole");
        let mut buffer = ReplayBuffer::new(replay_spec(env.as_ref()), 10_000).expect("buffer");
        let stats = collect_episodes(env.as_mut(), 0, 100, &mut buffer).expect("collect");
        let batch = all_transitions(&buffer, usize::MAX);
        assert_eq!(batch.batch_size, stats.steps);
        assert_eq!(
            batch.terminated.iter().filter(|&&t| t == 1.0).count(),
            stats.terminated
        );
        assert_eq!(all_transitions(&buffer, 10).batch_size, 10);
    }
}
