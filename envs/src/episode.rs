//! Bookkeeping shared by the built-in environments: Gymnasium's `TimeLimit` wrapper, the
//! "episode has ended" guard, and the reset random stream.

use crate::error::EnvError;
use crate::numpy_random::NumpyPcg64;

/// Where an environment is in its episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Created but never reset: stepping is an error.
    NotReset,
    /// Stepping is allowed.
    Running,
    /// The last step terminated or truncated the episode: stepping is an error until reset.
    Ended { terminated: bool, truncated: bool },
}

/// Gymnasium's `TimeLimit`: counts steps since reset and truncates when the count reaches the limit.
#[derive(Clone, Debug)]
pub(crate) struct EpisodeClock {
    max_episode_steps: usize,
    elapsed_steps: usize,
    phase: Phase,
}

impl EpisodeClock {
    pub(crate) fn new(max_episode_steps: usize) -> Self {
        EpisodeClock {
            max_episode_steps,
            elapsed_steps: 0,
            phase: Phase::NotReset,
        }
    }

    pub(crate) fn max_episode_steps(&self) -> usize {
        self.max_episode_steps
    }

    /// Starts a new episode (on reset or when a state is set directly).
    pub(crate) fn restart(&mut self) {
        self.elapsed_steps = 0;
        self.phase = Phase::Running;
    }

    /// Errors unless a step is allowed now.
    pub(crate) fn check_can_step(&self, env_id: &str) -> Result<(), EnvError> {
        match self.phase {
            Phase::Running => Ok(()),
            Phase::NotReset => Err(EnvError::NotReset {
                env_id: env_id.to_string(),
            }),
            Phase::Ended {
                terminated,
                truncated,
            } => Err(EnvError::EpisodeEnded {
                env_id: env_id.to_string(),
                elapsed_steps: self.elapsed_steps,
                terminated,
                truncated,
            }),
        }
    }

    /// Records one step and returns `truncated`: true when the step count reaches the limit
    /// (`elapsed >= max`, as in `TimeLimit.step`), whether or not the step also terminated.
    pub(crate) fn record_step(&mut self, terminated: bool) -> bool {
        self.elapsed_steps += 1;
        let truncated = self.elapsed_steps >= self.max_episode_steps;
        if terminated || truncated {
            self.phase = Phase::Ended {
                terminated,
                truncated,
            };
        }
        truncated
    }
}

/// The random stream of `reset`: NumPy's PCG64 seeded like Gymnasium's `np_random(seed)`.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResetRng {
    generator: Option<NumpyPcg64>,
}

impl ResetRng {
    /// `Some(seed)` reseeds; `None` continues the current stream, or (like Gymnasium's first
    /// unseeded reset) seeds from 128 bits of operating-system entropy when there is none yet.
    pub(crate) fn generator(&mut self, seed: Option<u64>) -> &mut NumpyPcg64 {
        if let Some(seed) = seed {
            self.generator = Some(NumpyPcg64::from_seed(u128::from(seed)));
        }
        self.generator
            .get_or_insert_with(|| NumpyPcg64::from_seed(rand::random::<u128>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_when_elapsed_steps_reach_the_limit() {
        let mut clock = EpisodeClock::new(3);
        clock.restart();
        assert!(!clock.record_step(false));
        assert!(!clock.record_step(false));
        assert!(clock.record_step(false));
        assert!(matches!(
            clock.check_can_step("X-v0"),
            Err(EnvError::EpisodeEnded {
                truncated: true,
                ..
            })
        ));
    }

    #[test]
    fn stepping_before_restart_is_an_error() {
        let clock = EpisodeClock::new(3);
        assert_eq!(
            clock.check_can_step("X-v0"),
            Err(EnvError::NotReset {
                env_id: "X-v0".into()
            })
        );
    }

    #[test]
    fn reset_rng_continues_the_stream_without_a_seed() {
        let mut rng = ResetRng::default();
        let first = rng.generator(Some(5)).next_u64();
        let second = rng.generator(None).next_u64();
        let mut reference = NumpyPcg64::from_seed(5);
        assert_eq!(
            [first, second],
            [reference.next_u64(), reference.next_u64()]
        );
    }
}
