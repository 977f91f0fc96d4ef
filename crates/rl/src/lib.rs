//! worldmodel's environments for burn's RL crate, [`burn_rl`] 0.22.1: its [`Environment`] trait
//! over the real environments ([`RealEnv`]) and over a trained world model ([`ImaginedEnv`],
//! the Dyna-style "environment in imagination"), so that policy learners written against
//! burn-rl train in imagination and are checked on the real system.
//!
//! burn-rl 0.22.1 ships traits (`Environment`, `Policy`, `PolicyLearner`) and a
//! `TransitionBuffer`, but no learner (burn's DQN agent is an example in burn's repository, and
//! the training loop lives in burn-train's `rl` feature). [`dqn`] is a small DQN written on
//! those traits and that buffer; its tests train it on the imagined CartPole.
//!
//! burn-rl's `Environment` has no batch dimension, no seed in `reset` and a compile-time episode
//! limit (`MAX_STEPS`): [`RealEnv`] and [`ImaginedEnv`] take the limit as a const parameter
//! (checked against the real environment's time limit), and reset from a seed stream that
//! starts at the seed given to `new` (`seed`, `seed + 1`, ... for the real environment).
//!
//! ```no_run
//! use burn_rl::Environment;
//! use wm_rl::{Obs, RealCartPole};
//!
//! let mut env = RealCartPole::new("cartpole", 0).expect("a built-in environment");
//! let Obs(first) = env.state();
//! let step = env.step(wm_envs::Action::Discrete(1));
//! assert_eq!((first.len(), step.reward), (4, 1.0));
//! ```

#![warn(missing_docs)]

pub mod dqn;
mod env;

pub use burn_rl::{Environment, StepResult};
pub use env::{ImaginedCartPole, ImaginedEnv, Obs, RealCartPole, RealEnv, RealPendulum, RlError};
