//! Conformance with Gymnasium: replays golden trajectories recorded with the real `gymnasium`
//! package (`scripts/goldens/generate.py`, versions in each file's header) and compares every step.
//! Python is not needed to run these tests.

use std::path::PathBuf;

use serde::Deserialize;
use wm_envs::{Action, CartPole, CartPoleParams, Env, Pendulum};

/// Absolute tolerance for observations and rewards.
const TOLERANCE: f64 = 1e-5;

#[derive(Debug, Deserialize)]
struct Golden {
    format: String,
    env_id: String,
    gymnasium_version: String,
    numpy_version: String,
    max_episode_steps: usize,
    unseeded_resets: UnseededResets,
    episodes: Vec<Episode>,
}

/// States after `reset(seed)` followed by plain `reset()` calls.
#[derive(Debug, Deserialize)]
struct UnseededResets {
    seed: u64,
    states: Vec<Vec<f64>>,
}

#[derive(Debug, Deserialize)]
struct Episode {
    seed: u64,
    policy: String,
    initial_state: Vec<f64>,
    initial_obs: Vec<f64>,
    steps: Vec<GoldenStep>,
}

#[derive(Debug, Deserialize)]
struct GoldenStep {
    action: GoldenAction,
    obs: Vec<f64>,
    reward: f64,
    terminated: bool,
    truncated: bool,
}

/// CartPole records an integer, Pendulum a one-element float list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GoldenAction {
    Discrete(usize),
    Continuous(Vec<f64>),
}

impl GoldenAction {
    fn to_action(&self) -> Action {
        match self {
            GoldenAction::Discrete(index) => Action::Discrete(*index),
            // The recorded values are float32 actions written as exact doubles.
            GoldenAction::Continuous(values) => {
                Action::Continuous(values.iter().map(|&v| v as f32).collect())
            }
        }
    }
}

fn load_golden(file_name: &str) -> Golden {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/goldens")
        .join(file_name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    let golden: Golden = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("parsing {}: {error}", path.display()));
    assert_eq!(golden.format, "wm-envs golden v1");
    golden
}

/// An environment whose internal state the goldens can set.
trait SettableEnv: Env {
    fn set_state_from(&mut self, state: &[f64]) -> Vec<f32>;
    fn state_vec(&self) -> Vec<f64>;
}

impl SettableEnv for CartPole {
    fn set_state_from(&mut self, state: &[f64]) -> Vec<f32> {
        self.set_state(
            state
                .try_into()
                .expect("a CartPole state should have 4 values"),
        )
    }
    fn state_vec(&self) -> Vec<f64> {
        self.state().to_vec()
    }
}

impl SettableEnv for Pendulum {
    fn set_state_from(&mut self, state: &[f64]) -> Vec<f32> {
        self.set_state(
            state
                .try_into()
                .expect("a Pendulum state should have 2 values"),
        )
    }
    fn state_vec(&self) -> Vec<f64> {
        self.state().to_vec()
    }
}

/// Largest deviations seen while replaying.
#[derive(Debug, Default)]
struct ReplayReport {
    episodes: usize,
    steps: usize,
    max_obs_diff: f64,
    max_reward_diff: f64,
}

fn max_abs_diff(ours: &[f32], golden: &[f64]) -> Result<f64, String> {
    if ours.len() != golden.len() {
        return Err(format!(
            "observation length {} != golden {}",
            ours.len(),
            golden.len()
        ));
    }
    Ok(ours
        .iter()
        .zip(golden)
        .map(|(&a, &b)| (f64::from(a) - b).abs())
        .fold(0.0, f64::max))
}

/// Replays every golden episode from its recorded initial state; the first mismatch is the error.
fn replay(env: &mut impl SettableEnv, golden: &Golden) -> Result<ReplayReport, String> {
    let mut report = ReplayReport::default();
    for (episode_index, episode) in golden.episodes.iter().enumerate() {
        let context = |t: usize| {
            format!(
                "{} episode {episode_index} (seed {}) step {t}",
                golden.env_id, episode.seed
            )
        };
        let obs = env.set_state_from(&episode.initial_state);
        report.max_obs_diff = report
            .max_obs_diff
            .max(max_abs_diff(&obs, &episode.initial_obs)?);
        for (t, expected) in episode.steps.iter().enumerate() {
            let step = env
                .step(&expected.action.to_action())
                .map_err(|error| format!("{}: {error}", context(t)))?;
            let obs_diff = max_abs_diff(&step.obs, &expected.obs)
                .map_err(|error| format!("{}: {error}", context(t)))?;
            let reward_diff = (step.reward - expected.reward).abs();
            if obs_diff > TOLERANCE || reward_diff > TOLERANCE {
                return Err(format!(
                    "{}: obs {:?} vs golden {:?} (diff {obs_diff:e}), reward {} vs {} (diff {reward_diff:e})",
                    context(t),
                    step.obs,
                    expected.obs,
                    step.reward,
                    expected.reward
                ));
            }
            if (step.terminated, step.truncated) != (expected.terminated, expected.truncated) {
                return Err(format!(
                    "{}: terminated/truncated {:?} vs golden {:?}",
                    context(t),
                    (step.terminated, step.truncated),
                    (expected.terminated, expected.truncated)
                ));
            }
            report.max_obs_diff = report.max_obs_diff.max(obs_diff);
            report.max_reward_diff = report.max_reward_diff.max(reward_diff);
            report.steps += 1;
        }
        // The golden episode ended with its last step, so ours must have too.
        if env.step(&episode.steps[0].action.to_action()).is_ok() {
            return Err(format!(
                "{}: the episode should have ended",
                context(episode.steps.len())
            ));
        }
        report.episodes += 1;
    }
    Ok(report)
}

fn print_report(golden: &Golden, report: &ReplayReport) {
    println!(
        "{} (gymnasium {}, numpy {}): {} episodes, {} steps, max |obs diff| {:e}, max |reward diff| {:e}",
        golden.env_id,
        golden.gymnasium_version,
        golden.numpy_version,
        report.episodes,
        report.steps,
        report.max_obs_diff,
        report.max_reward_diff
    );
}

/// Checks that `reset(Some(seed))` reproduces Gymnasium's initial state bit for bit, and that
/// plain resets continue NumPy's random stream the same way.
fn check_seeded_resets(env: &mut impl SettableEnv, golden: &Golden) {
    for episode in &golden.episodes {
        let obs = env.reset(Some(episode.seed));
        assert_eq!(
            env.state_vec(),
            episode.initial_state,
            "{} reset(seed={})",
            golden.env_id,
            episode.seed
        );
        let golden_obs: Vec<f32> = episode.initial_obs.iter().map(|&v| v as f32).collect();
        assert_eq!(
            obs, golden_obs,
            "{} reset(seed={}) observation",
            golden.env_id, episode.seed
        );
    }
    let stream = &golden.unseeded_resets;
    env.reset(Some(stream.seed));
    assert_eq!(env.state_vec(), stream.states[0]);
    for (index, expected) in stream.states.iter().enumerate().skip(1) {
        env.reset(None);
        assert_eq!(
            &env.state_vec(),
            expected,
            "{} unseeded reset {index} after seed {}",
            golden.env_id,
            stream.seed
        );
    }
}

#[test]
fn cartpole_matches_gymnasium_goldens() {
    let golden = load_golden("cartpole_v1.json");
    let mut env = CartPole::new();
    assert_eq!(
        (env.id(), env.max_episode_steps()),
        (golden.env_id.as_str(), Some(golden.max_episode_steps))
    );
    let report = replay(&mut env, &golden).unwrap_or_else(|mismatch| panic!("{mismatch}"));
    print_report(&golden, &report);
}

#[test]
fn pendulum_matches_gymnasium_goldens() {
    let golden = load_golden("pendulum_v1.json");
    let mut env = Pendulum::new();
    assert_eq!(
        (env.id(), env.max_episode_steps()),
        (golden.env_id.as_str(), Some(golden.max_episode_steps))
    );
    let report = replay(&mut env, &golden).unwrap_or_else(|mismatch| panic!("{mismatch}"));
    print_report(&golden, &report);
}

#[test]
fn cartpole_seeded_reset_reproduces_gymnasium_initial_states() {
    check_seeded_resets(&mut CartPole::new(), &load_golden("cartpole_v1.json"));
}

#[test]
fn pendulum_seeded_reset_reproduces_gymnasium_initial_states() {
    check_seeded_resets(&mut Pendulum::new(), &load_golden("pendulum_v1.json"));
}

/// The goldens must be able to catch a wrong constant: gym-rs 0.3 computes
/// `polemass_length = masspole + length` (0.6) instead of `masspole * length` (0.05).
#[test]
fn cartpole_with_gym_rs_polemass_length_bug_does_not_match_goldens() {
    let golden = load_golden("cartpole_v1.json");
    let defaults = CartPoleParams::default();
    let buggy = CartPoleParams {
        polemass_length: defaults.masspole + defaults.length,
        ..defaults
    };
    let mismatch =
        replay(&mut CartPole::with_params(buggy), &golden).expect_err("the bug should be detected");
    println!("detected as expected: {mismatch}");
}

/// A subtler perturbation: gravity off by 0.1% must be caught too.
#[test]
fn cartpole_with_slightly_wrong_gravity_does_not_match_goldens() {
    let golden = load_golden("cartpole_v1.json");
    let perturbed = CartPoleParams {
        gravity: 9.81,
        ..CartPoleParams::default()
    };
    assert!(replay(&mut CartPole::with_params(perturbed), &golden).is_err());
}

/// The goldens cover what they are meant to: terminations, truncations at the time limit
/// (CartPole's balancing episodes), and Pendulum torques outside [-2, 2] that must be clipped.
#[test]
fn goldens_cover_termination_truncation_and_clipping() {
    let cartpole = load_golden("cartpole_v1.json");
    assert!(cartpole.episodes.len() >= 25);
    let last_steps = || {
        cartpole
            .episodes
            .iter()
            .map(|episode| episode.steps.last().expect("non-empty episode"))
    };
    assert!(last_steps().any(|step| step.terminated));
    assert!(
        cartpole
            .episodes
            .iter()
            .any(|e| e.policy == "balance" && e.steps.len() == 500 && e.steps[499].truncated)
    );

    let pendulum = load_golden("pendulum_v1.json");
    assert!(pendulum.episodes.len() >= 25);
    assert!(
        pendulum
            .episodes
            .iter()
            .all(|e| e.steps.len() == 200 && e.steps[199].truncated)
    );
    let clipped = pendulum
        .episodes
        .iter()
        .flat_map(|e| &e.steps)
        .filter(|step| matches!(&step.action, GoldenAction::Continuous(v) if v[0].abs() > 2.0))
        .count();
    assert!(clipped > 100, "only {clipped} actions outside [-2, 2]");
}
