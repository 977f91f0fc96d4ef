//! Adapter running [gym-rs](https://crates.io/crates/gym-rs) 0.3's `CartPoleEnv` behind this
//! crate's [`Env`] trait (crate feature `gym-rs`, off by default).
//!
//! **Prefer the built-in [`CartPole`](crate::CartPole): gym-rs 0.3.0 is not Gymnasium's CartPole.**
//! Read from its source (`src/envs/classical_control/cartpole.rs` of gym-rs 0.3.0):
//!
//! * **Wrong dynamics**: `polemass_length()` returns `masspole + length` (0.6) instead of
//!   `masspole * length` (0.05), so the pole's coupling to the cart is 12 times too strong.
//!   The conformance test `cartpole_with_gym_rs_polemass_length_bug_does_not_match_goldens`
//!   shows that this diverges from Gymnasium on the first step.
//! * **Wrong reset distribution**: the state is drawn uniformly from `[-0.5, 0.5)` per element,
//!   not `[-0.05, 0.05)`, with `rand_pcg::Pcg64::seed_from_u64(seed)` rather than NumPy's
//!   SeedSequence/PCG64, so seeds do not give Gymnasium's initial states.
//! * **No time limit**: its docs promise truncation after 500 steps but `step` always returns
//!   `truncated: false`. This adapter adds the 500-step `TimeLimit` itself.
//! * **Stepping after termination** is allowed (reward 0 and a log warning); invalid actions
//!   panic (`assert!`). This adapter turns both into [`EnvError`]s, like the built-in envs.
//! * **`reset(None)`** draws a fresh seed from `thread_rng` instead of continuing the stream.
//!   This adapter keeps Gymnasium's semantics by deriving each unseeded reset's seed from a
//!   stream seeded by the last `reset(Some(seed))`.
//! * **Types**: state, observation and reward are `OrderedFloat<f64>`; observations are cast
//!   to `f32` here. It squares with `powf(2.0)` rather than `x * x` (last-bit differences only).
//! * **No Pendulum**: gym-rs 0.3.0 (the newest release) ships only `CartPoleEnv` and
//!   `MountainCarEnv`, so there is no Pendulum adapter.
//!
//! **Building**: gym-rs depends on `sdl2` 0.35 with the `bundled` and `gfx` features. `bundled`
//! compiles SDL2 itself from source with CMake; `gfx` links the *system* `SDL2_gfx` library,
//! which is not bundled. On Debian 12 this needs `apt-get install cmake libsdl2-gfx-dev`:
//! * without `cmake`, `sdl2-sys` fails in its build script with "failed to execute command:
//!   No such file or directory (os error 2) ... is `cmake` not installed?";
//! * without `libsdl2-gfx-dev`, `cargo check` passes but linking fails with
//!   "rust-lld: error: unable to find library -lSDL2_gfx".
//!
//! With both installed, `cargo test -p wm-envs --features gym-rs` builds and passes (the first
//! build of SDL2 takes a few minutes).
//!
//! **Threads**: gym-rs's `CartPoleEnv` holds SDL handles (`Option<WindowCanvas>`, `EventPump`)
//! and so is not `Send`, while [`Env`] requires `Send`. The adapter therefore owns the gym-rs
//! environment on a dedicated worker thread and talks to it over channels; rendering is off
//! (`RenderMode::None`), so SDL is never initialised.

use std::sync::mpsc;
use std::thread;

use gym_rs::core::Env as GymRsEnvTrait;
use gym_rs::envs::classical_control::cartpole::CartPoleEnv;
use gym_rs::utils::renderer::RenderMode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cartpole::CARTPOLE_MAX_EPISODE_STEPS;
use crate::episode::EpisodeClock;
use crate::error::EnvError;
use crate::space::{Action, Space};
use crate::{CartPole, Env, Step};

/// Id reported by [`GymRsCartPole`], distinct from the Gymnasium-exact `CartPole-v1`.
pub const GYM_RS_CARTPOLE_ID: &str = "gym-rs/CartPole-v1";

/// A request to the worker thread that owns the gym-rs environment.
enum Request {
    Reset(u64),
    Step(usize),
}

/// The worker's answer: the observation, and for steps the reward and gym-rs's `done`.
struct Reply {
    observation: Vec<f64>,
    reward: f64,
    done: bool,
}

/// gym-rs 0.3's `CartPoleEnv` as an [`Env`] (see the module docs for how it differs from
/// Gymnasium). Id `gym-rs/CartPole-v1`, `Discrete(2)` actions, 500-step time limit.
pub struct GymRsCartPole {
    requests: mpsc::Sender<Request>,
    replies: mpsc::Receiver<Reply>,
    clock: EpisodeClock,
    /// Source of the seeds passed to gym-rs on unseeded resets.
    seed_stream: StdRng,
}

impl GymRsCartPole {
    /// Starts the worker thread and creates gym-rs's `CartPoleEnv` on it (no rendering).
    pub fn new() -> Self {
        let (requests, request_receiver) = mpsc::channel::<Request>();
        let (reply_sender, replies) = mpsc::channel::<Reply>();
        thread::Builder::new()
            .name("gym-rs-cartpole".into())
            .spawn(move || {
                let mut env = CartPoleEnv::new(RenderMode::None);
                // Ends when the adapter (the request sender) is dropped or a reply cannot be sent.
                for request in request_receiver {
                    let reply = match request {
                        Request::Reset(seed) => {
                            let (observation, _info) = env.reset(Some(seed), false, None);
                            Reply {
                                observation: observation.into(),
                                reward: 0.0,
                                done: false,
                            }
                        }
                        Request::Step(action) => {
                            let outcome = env.step(action);
                            Reply {
                                observation: outcome.observation.into(),
                                reward: outcome.reward.into_inner(),
                                done: outcome.done,
                            }
                        }
                    };
                    if reply_sender.send(reply).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning the gym-rs worker thread should succeed");
        GymRsCartPole {
            requests,
            replies,
            clock: EpisodeClock::new(CARTPOLE_MAX_EPISODE_STEPS),
            seed_stream: StdRng::from_os_rng(),
        }
    }

    fn call(&self, operation: &'static str, request: Request) -> Result<Reply, EnvError> {
        let worker_gone = || EnvError::Backend {
            env_id: GYM_RS_CARTPOLE_ID.to_string(),
            operation,
            message: "the gym-rs worker thread stopped (it panicked earlier)".to_string(),
        };
        self.requests.send(request).map_err(|_| worker_gone())?;
        self.replies.recv().map_err(|_| worker_gone())
    }
}

impl Default for GymRsCartPole {
    fn default() -> Self {
        Self::new()
    }
}

fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&value| value as f32).collect()
}

impl Env for GymRsCartPole {
    fn id(&self) -> &str {
        GYM_RS_CARTPOLE_ID
    }

    /// The same bounds as the built-in CartPole (gym-rs uses the same thresholds).
    fn observation_space(&self) -> Space {
        CartPole::new().observation_space()
    }

    fn action_space(&self) -> Space {
        Space::Discrete { n: 2 }
    }

    fn max_episode_steps(&self) -> Option<usize> {
        Some(self.clock.max_episode_steps())
    }

    /// # Panics
    /// If the worker thread has died (an earlier gym-rs panic), since `reset` cannot return an error.
    fn reset(&mut self, seed: Option<u64>) -> Vec<f32> {
        if let Some(seed) = seed {
            self.seed_stream = StdRng::seed_from_u64(seed);
        }
        let gym_rs_seed = self.seed_stream.random::<u64>();
        let reply = self
            .call("reset", Request::Reset(gym_rs_seed))
            .unwrap_or_else(|error| panic!("{error}"));
        self.clock.restart();
        to_f32(&reply.observation)
    }

    fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let index = match action {
            Action::Discrete(index @ (0 | 1)) => *index,
            _ => {
                return Err(EnvError::InvalidAction {
                    env_id: GYM_RS_CARTPOLE_ID.to_string(),
                    action: action.clone(),
                    space: self.action_space(),
                });
            }
        };
        self.clock.check_can_step(GYM_RS_CARTPOLE_ID)?;
        let reply = self.call("step", Request::Step(index))?;
        let truncated = self.clock.record_step(reply.done);
        Ok(Step {
            obs: to_f32(&reply.observation),
            reward: reply.reward,
            terminated: reply.done,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gym_rs_cartpole_runs_an_episode_through_the_adapter() {
        let mut env = GymRsCartPole::new();
        let obs = env.reset(Some(0));
        assert_eq!(obs.len(), 4);
        let mut steps = 0;
        loop {
            let step = env
                .step(&Action::Discrete(steps % 2))
                .expect("episode running");
            steps += 1;
            if step.terminated || step.truncated {
                break;
            }
        }
        assert!(steps <= CARTPOLE_MAX_EPISODE_STEPS);
        assert!(
            env.step(&Action::Discrete(0)).is_err(),
            "stepping after the end is an error"
        );
        assert!(env.step(&Action::Discrete(2)).is_err());
    }

    #[test]
    fn gym_rs_cartpole_resets_outside_gymnasiums_range() {
        // gym-rs's state cannot be set from outside, so its dynamics cannot be replayed against
        // the goldens; its reset range, ten times Gymnasium's, is observable directly.
        let mut env = GymRsCartPole::new();
        let widest = (0..20)
            .map(|seed| {
                env.reset(Some(seed))
                    .iter()
                    .fold(0.0f32, |m, v| m.max(v.abs()))
            })
            .fold(0.0f32, f32::max);
        assert!(
            widest > 0.05,
            "gym-rs resets in [-0.5, 0.5), widest seen {widest}"
        );
    }
}
