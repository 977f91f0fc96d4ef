//! `wm env rollout` and `wm env list`.

use std::io::{BufWriter, Write};

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use wm_envs::{
    Action, BimodalWalk, CartPole, Env, GustyCartPole, KickedPendulum, Pendulum, WetChicken,
};

use crate::cli::{PolicyKind, RolloutArgs};

/// One line of `wm env rollout` output.
#[derive(Serialize)]
struct StepRecord<'a> {
    env: &'a str,
    episode: u64,
    t: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<Vec<f64>>,
    obs: &'a [f32],
    action: ActionJson<'a>,
    reward: f64,
    terminated: bool,
    truncated: bool,
    next_obs: &'a [f32],
}

/// Discrete actions print as an integer, continuous ones as a list of floats.
#[derive(Serialize)]
#[serde(untagged)]
enum ActionJson<'a> {
    Discrete(usize),
    Continuous(&'a [f32]),
}

impl<'a> From<&'a Action> for ActionJson<'a> {
    fn from(action: &'a Action) -> Self {
        match action {
            Action::Discrete(index) => Self::Discrete(*index),
            Action::Continuous(values) => Self::Continuous(values),
        }
    }
}

/// A built-in environment together with access to its internal state, which the JSON output
/// records at each reset so that Gymnasium can replay the episode from the same state.
trait EnvWithState: Env {
    fn internal_state(&self) -> Vec<f64>;
}

impl EnvWithState for CartPole {
    fn internal_state(&self) -> Vec<f64> {
        self.state().to_vec()
    }
}

impl EnvWithState for Pendulum {
    fn internal_state(&self) -> Vec<f64> {
        self.state().to_vec()
    }
}

impl EnvWithState for KickedPendulum {
    fn internal_state(&self) -> Vec<f64> {
        self.state().to_vec()
    }
}

impl EnvWithState for GustyCartPole {
    fn internal_state(&self) -> Vec<f64> {
        self.state().to_vec()
    }
}

impl EnvWithState for WetChicken {
    fn internal_state(&self) -> Vec<f64> {
        self.state().to_vec()
    }
}

impl EnvWithState for BimodalWalk {
    fn internal_state(&self) -> Vec<f64> {
        vec![self.state()]
    }
}

fn make_with_state(name: &str) -> anyhow::Result<Box<dyn EnvWithState>> {
    // `make` validates the name and gives the error listing the known ones.
    let id = wm_envs::make(name)?.id().to_string();
    match id.as_str() {
        wm_envs::CARTPOLE_ID => Ok(Box::new(CartPole::new())),
        wm_envs::PENDULUM_ID => Ok(Box::new(Pendulum::new())),
        wm_envs::KICKED_PENDULUM_ID => Ok(Box::new(KickedPendulum::new())),
        wm_envs::GUSTY_CARTPOLE_ID => Ok(Box::new(GustyCartPole::new())),
        wm_envs::WET_CHICKEN_ID => Ok(Box::new(WetChicken::new())),
        wm_envs::BIMODAL_WALK_ID => Ok(Box::new(BimodalWalk::new())),
        other => anyhow::bail!("environment {other} has no state access for rollout"),
    }
}

pub fn rollout(args: &RolloutArgs) -> anyhow::Result<()> {
    let mut env = make_with_state(&args.env)?;
    if args.steps == 0 {
        // An empty JSON Lines stream is valid output; say why it is empty.
        eprintln!("--steps 0: no step to print");
        return Ok(());
    }
    let mut policy_rng = ChaCha8Rng::seed_from_u64(args.seed);
    let action_space = env.action_space();
    let PolicyKind::Random = args.policy;

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut obs = env.reset(Some(args.seed));
    let mut state_at_reset = Some(env.internal_state());
    let (mut episode, mut t) = (0u64, 0u64);
    for _ in 0..args.steps {
        let action = action_space.sample(&mut policy_rng);
        let step = env
            .step(&action)
            .with_context(|| format!("episode {episode}, step {t}"))?;
        let record = StepRecord {
            env: env.id(),
            episode,
            t,
            state: state_at_reset.take(),
            obs: &obs,
            action: (&action).into(),
            reward: step.reward,
            terminated: step.terminated,
            truncated: step.truncated,
            next_obs: &step.obs,
        };
        if let Err(error) = serde_json::to_writer(&mut out, &record)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
        {
            return ignore_broken_pipe(error);
        }
        t += 1;
        obs = step.obs;
        if step.terminated || step.truncated {
            obs = env.reset(None);
            state_at_reset = Some(env.internal_state());
            episode += 1;
            t = 0;
        }
    }
    out.flush().or_else(ignore_broken_pipe)
}

/// A reader that stops early (`wm env rollout ... | head`) is not an error.
fn ignore_broken_pipe(error: std::io::Error) -> anyhow::Result<()> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(error).context("writing to stdout")
    }
}

pub fn list() -> anyhow::Result<()> {
    for name in wm_envs::ENV_NAMES {
        let env = wm_envs::make(name)?;
        let limit = env
            .max_episode_steps()
            .map_or("none".to_string(), |n| n.to_string());
        println!(
            "{name:<16} {:<18} observation {}  action {}  time limit {limit}",
            env.id(),
            env.observation_space(),
            env.action_space()
        );
    }
    Ok(())
}
