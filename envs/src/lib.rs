//! Reinforcement-learning environments behind a small Gymnasium-style [`Env`] trait.
//!
//! Built in, deterministic: [`CartPole`] (`CartPole-v1`) and [`Pendulum`] (`Pendulum-v1`), identical to
//! Gymnasium 1.x including its `TimeLimit` wrapper: same constants, integrator, `f64` internal
//! state and `f32` observations, same rewards, termination and truncation, and the same NumPy
//! arithmetic (for Pendulum, NumPy 2's `float32`/`float64` promotion rules). The conformance
//! tests replay golden trajectories recorded with the real `gymnasium` package
//! (`scripts/goldens/generate.py`) and match them to the last bit.
//!
//! Resets are reproducible and, for the same seed, give Gymnasium's initial state bit for bit:
//! the reset random stream is NumPy's `SeedSequence` → `PCG64` → `Generator.uniform`,
//! reimplemented in Rust. `reset(Some(seed))` reseeds it, `reset(None)` continues it.
//!
//! Built in, stochastic by design (each exposes its true transition law through
//! [`StochasticTransition`]; see [`stochastic_transition`]): [`KickedPendulum`] (random torque
//! kicks, three atoms), [`GustyCartPole`] (a two-component gust mixture added to CartPole-v1's
//! push), [`WetChicken`] (bimodal and heteroscedastic) and [`BimodalWalk`] (`s' = s + a ± δ`).
//! Their transition noise has its own stream, reseeded by `reset(Some(seed))`.
//!
//! With the `gym-rs` feature, `gym_rs` adapts the environments of the gym-rs crate to
//! [`Env`] (their dynamics differ from Gymnasium's; see that module).
//!
//! # Using an environment
//! ```
//! use wm_envs::{make, Action};
//!
//! let mut env = make("cartpole")?;
//! let mut obs = env.reset(Some(0));
//! loop {
//!     let action = Action::Discrete(usize::from(obs[2] > 0.0)); // push towards the lean
//!     let step = env.step(&action)?;
//!     obs = step.obs;
//!     if step.terminated || step.truncated {
//!         break;
//!     }
//! }
//! # Ok::<(), wm_envs::EnvError>(())
//! ```
//!
//! # Implementing your own environment
//! A point mass on a line, pushed by a force in `[-1, 1]`, rewarded for staying near 0:
//! ```
//! use wm_envs::{Action, Env, EnvError, Space, Step};
//!
//! struct PointMass { position: f64, velocity: f64, steps: usize }
//!
//! impl Env for PointMass {
//!     fn id(&self) -> &str { "PointMass-v0" }
//!     fn observation_space(&self) -> Space {
//!         Space::Box { low: vec![f32::NEG_INFINITY; 2], high: vec![f32::INFINITY; 2] }
//!     }
//!     fn action_space(&self) -> Space { Space::Box { low: vec![-1.0], high: vec![1.0] } }
//!     fn max_episode_steps(&self) -> Option<usize> { Some(100) }
//!     fn reset(&mut self, _seed: Option<u64>) -> Vec<f32> {
//!         (self.position, self.velocity, self.steps) = (1.0, 0.0, 0);
//!         vec![1.0, 0.0]
//!     }
//!     fn step(&mut self, action: &Action) -> Result<Step, EnvError> {
//!         if !self.action_space().contains(action) {
//!             return Err(EnvError::InvalidAction {
//!                 env_id: self.id().into(), action: action.clone(), space: self.action_space(),
//!             });
//!         }
//!         let force = f64::from(action.to_f32_vec()[0]);
//!         self.velocity += 0.1 * force;
//!         self.position += 0.1 * self.velocity;
//!         self.steps += 1;
//!         Ok(Step {
//!             obs: vec![self.position as f32, self.velocity as f32],
//!             reward: -self.position.abs(),
//!             terminated: false,
//!             truncated: self.steps >= 100,
//!         })
//!     }
//! }
//!
//! let mut env: Box<dyn Env> = Box::new(PointMass { position: 0.0, velocity: 0.0, steps: 0 });
//! env.reset(None);
//! let step = env.step(&Action::Continuous(vec![-1.0]))?;
//! assert!(step.obs[0] < 1.0);
//! assert!(env.step(&Action::Continuous(vec![3.0])).is_err());
//! # Ok::<(), EnvError>(())
//! ```

#![warn(missing_docs)]

mod bimodal_walk;
mod cartpole;
mod episode;
mod error;
mod gusty_cartpole;
mod kicked_pendulum;
mod numpy_random;
mod pendulum;
mod space;
pub mod stochastic;
mod wet_chicken;

#[cfg(feature = "gym-rs")]
pub mod gym_rs;

pub use bimodal_walk::{
    BIMODAL_WALK_ID, BIMODAL_WALK_MAX_EPISODE_STEPS, BimodalWalk, BimodalWalkParams,
};
pub use cartpole::{CARTPOLE_ID, CARTPOLE_MAX_EPISODE_STEPS, CartPole, CartPoleParams};
pub use error::EnvError;
pub use gusty_cartpole::{GUSTY_CARTPOLE_ID, GustyCartPole, GustyCartPoleParams};
pub use kicked_pendulum::{KICKED_PENDULUM_ID, KickedPendulum, KickedPendulumParams};
pub use pendulum::{PENDULUM_ID, PENDULUM_MAX_EPISODE_STEPS, Pendulum};
pub use space::{Action, Space};
pub use stochastic::{Mode, StochasticTransition};
pub use wet_chicken::{
    WET_CHICKEN_ID, WET_CHICKEN_MAX_EPISODE_STEPS, WetChicken, WetChickenParams,
};

/// The result of one [`Env::step`].
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Observation after the step.
    pub obs: Vec<f32>,
    /// Reward for the step.
    pub reward: f64,
    /// The episode reached a terminal state of the task (the value of the next state is 0).
    pub terminated: bool,
    /// The episode was cut short, e.g. by the time limit (the next state still has a value).
    pub truncated: bool,
}

/// An episodic environment in the manner of Gymnasium's `Env`, time limit included.
///
/// Call [`reset`](Env::reset) first, then [`step`](Env::step) until a step returns
/// `terminated` or `truncated`; stepping again before the next reset is an error.
pub trait Env: Send {
    /// The Gymnasium-style id, e.g. `"CartPole-v1"`.
    fn id(&self) -> &str;
    /// The space observations belong to.
    fn observation_space(&self) -> Space;
    /// The space actions are taken from.
    fn action_space(&self) -> Space;
    /// The step at which episodes are truncated, if any.
    fn max_episode_steps(&self) -> Option<usize>;
    /// Starts a new episode and returns its first observation. `Some(seed)` reseeds the
    /// environment's random stream; `None` continues it.
    fn reset(&mut self, seed: Option<u64>) -> Vec<f32>;
    /// Applies `action`. `truncated` includes the time limit: it is true on the step where the
    /// step count reaches [`max_episode_steps`](Env::max_episode_steps), even if the step also
    /// terminated. Errors on an invalid action, before the first reset, or after the episode ended.
    fn step(&mut self, action: &Action) -> Result<Step, EnvError>;
}

/// The canonical short names accepted by [`make`].
pub const ENV_NAMES: &[&str] = &[
    "cartpole",
    "pendulum",
    "kicked_pendulum",
    "gusty_cartpole",
    "wet_chicken",
    "bimodal_walk",
];

/// Every `(short name, id)` pair [`make`] accepts.
const NAMES_AND_IDS: [(&str, &str); 6] = [
    ("cartpole", CARTPOLE_ID),
    ("pendulum", PENDULUM_ID),
    ("kicked_pendulum", KICKED_PENDULUM_ID),
    ("gusty_cartpole", GUSTY_CARTPOLE_ID),
    ("wet_chicken", WET_CHICKEN_ID),
    ("bimodal_walk", BIMODAL_WALK_ID),
];

/// The short name of `name` (a short name or an id), or the error listing the known ones.
fn canonical_name(name: &str) -> Result<&'static str, EnvError> {
    NAMES_AND_IDS
        .iter()
        .find(|(short, id)| name == *short || name == *id)
        .map(|(short, _)| *short)
        .ok_or_else(|| EnvError::UnknownEnv {
            name: name.to_string(),
            known: NAMES_AND_IDS
                .iter()
                .flat_map(|(short, id)| [short.to_string(), id.to_string()])
                .collect(),
        })
}

/// Creates a built-in environment by short name or Gymnasium-style id:
/// `"cartpole"` / `"CartPole-v1"`, `"pendulum"` / `"Pendulum-v1"`, `"kicked_pendulum"` /
/// `"KickedPendulum-v0"`, `"gusty_cartpole"` / `"GustyCartPole-v0"`, `"wet_chicken"` /
/// `"WetChicken-v0"`, `"bimodal_walk"` / `"BimodalWalk-v0"` (the stochastic ones with their
/// default parameters). The environment must be [`reset`](Env::reset) before stepping.
pub fn make(name: &str) -> Result<Box<dyn Env>, EnvError> {
    Ok(match canonical_name(name)? {
        "cartpole" => Box::new(CartPole::new()),
        "pendulum" => Box::new(Pendulum::new()),
        "kicked_pendulum" => Box::new(KickedPendulum::new()),
        "gusty_cartpole" => Box::new(GustyCartPole::new()),
        "wet_chicken" => Box::new(WetChicken::new()),
        "bimodal_walk" => Box::new(BimodalWalk::new()),
        other => unreachable!("{other} is in NAMES_AND_IDS but not made"),
    })
}

/// The true transition law of a built-in stochastic environment, by the names [`make`]
/// accepts, with the default parameters `make` uses: `Ok(None)` for the deterministic
/// `cartpole` and `pendulum`.
///
/// # Errors
/// [`EnvError::UnknownEnv`] for a name `make` does not know.
pub fn stochastic_transition(
    name: &str,
) -> Result<Option<Box<dyn StochasticTransition>>, EnvError> {
    Ok(match canonical_name(name)? {
        "kicked_pendulum" => Some(Box::new(KickedPendulum::new())),
        "gusty_cartpole" => Some(Box::new(GustyCartPole::new())),
        "wet_chicken" => Some(Box::new(WetChicken::new())),
        "bimodal_walk" => Some(Box::new(BimodalWalk::new())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_accepts_short_names_and_gymnasium_ids() {
        for (name, id) in [
            ("cartpole", CARTPOLE_ID),
            ("CartPole-v1", CARTPOLE_ID),
            ("pendulum", PENDULUM_ID),
            ("Pendulum-v1", PENDULUM_ID),
        ] {
            assert_eq!(make(name).expect("known name").id(), id);
        }
        for name in ENV_NAMES {
            assert!(make(name).is_ok(), "{name}");
        }
        for (name, id) in NAMES_AND_IDS {
            assert_eq!(make(name).expect("known").id(), id);
            assert_eq!(make(id).expect("known").id(), id);
        }
    }

    #[test]
    fn stochastic_envs_expose_their_transition_and_deterministic_ones_do_not() {
        for name in ["cartpole", "Pendulum-v1"] {
            assert!(stochastic_transition(name).expect("known").is_none());
        }
        for name in [
            "kicked_pendulum",
            "gusty_cartpole",
            "wet_chicken",
            "bimodal_walk",
        ] {
            let env = make(name).expect("known");
            let transition = stochastic_transition(name)
                .expect("known")
                .expect("stochastic");
            let mut env = env;
            let obs = env.reset(Some(0));
            let action = env.action_space().sample(&mut rand::rng());
            let modes = transition.modes(&obs, &action).expect("valid");
            let total: f64 = modes.iter().map(|m| m.weight).sum();
            assert!((total - 1.0).abs() < 1e-12, "{name}: {modes:?}");
            let next = transition
                .sample_next(&obs, &action, &mut rand::rng())
                .expect("valid");
            assert_eq!(next.len(), obs.len(), "{name}");
        }
        assert!(stochastic_transition("acrobot").is_err());
    }

    #[test]
    fn unknown_env_name_lists_the_known_names() {
        let error = make("acrobot").err().expect("unknown name");
        assert_eq!(
            error.to_string(),
            "unknown environment \"acrobot\"; known names: cartpole, CartPole-v1, pendulum, Pendulum-v1, \
             kicked_pendulum, KickedPendulum-v0, gusty_cartpole, GustyCartPole-v0, wet_chicken, \
             WetChicken-v0, bimodal_walk, BimodalWalk-v0"
        );
    }

    #[test]
    fn built_in_envs_report_time_limits_and_spaces() {
        let cartpole = make("cartpole").expect("known");
        assert_eq!(cartpole.max_episode_steps(), Some(500));
        assert_eq!(cartpole.action_space(), Space::Discrete { n: 2 });
        assert_eq!(cartpole.observation_space().width(), 4);
        let pendulum = make("pendulum").expect("known");
        assert_eq!(pendulum.max_episode_steps(), Some(200));
        assert_eq!(pendulum.action_space().width(), 1);
        assert_eq!(pendulum.observation_space().width(), 3);
    }

    #[test]
    fn envs_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Box<dyn Env>>();
    }
}
