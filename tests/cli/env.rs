use serde_json::Value;

use crate::util::{stderr, stdout, wm};

fn rollout(env: &str, seed: &str, steps: &str) -> Vec<Value> {
    let output = wm(&[
        "env", "rollout", "--env", env, "--seed", seed, "--steps", steps,
    ]);
    assert!(
        output.status.success(),
        "wm env rollout failed: {}",
        stderr(&output)
    );
    stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line should be JSON"))
        .collect()
}

#[test]
fn cartpole_rollout_prints_one_json_object_per_step_across_episodes() {
    let records = rollout("cartpole", "5", "300");
    assert_eq!(records.len(), 300);
    let mut expected_episode = 0;
    let mut expected_t = 0;
    for record in &records {
        assert_eq!(record["env"], "CartPole-v1");
        assert_eq!(record["episode"], expected_episode, "{record}");
        assert_eq!(record["t"], expected_t, "{record}");
        assert_eq!(
            record["state"].is_array(),
            expected_t == 0,
            "state is printed at each episode's first step: {record}"
        );
        assert!(
            record["action"].is_u64() && record["action"].as_u64() < Some(2),
            "{record}"
        );
        assert_eq!(record["obs"].as_array().map(Vec::len), Some(4));
        assert_eq!(record["next_obs"].as_array().map(Vec::len), Some(4));
        assert_eq!(record["reward"], 1.0);
        expected_t += 1;
        if record["terminated"] == true || record["truncated"] == true {
            expected_episode += 1;
            expected_t = 0;
        }
    }
    assert!(
        expected_episode >= 3,
        "a random policy ends several CartPole episodes in 300 steps, got {expected_episode}"
    );
}

#[test]
fn pendulum_rollout_has_continuous_actions_and_truncates_at_200() {
    let records = rollout("pendulum", "1", "401");
    let action = records[0]["action"]
        .as_array()
        .expect("continuous actions print as a list");
    assert_eq!(action.len(), 1);
    assert_eq!(
        records[199]["truncated"], true,
        "Pendulum-v1 truncates at its 200th step"
    );
    assert_eq!(records[200]["episode"], 1);
    assert_eq!(records[200]["t"], 0);
    assert!(records.iter().all(|r| r["terminated"] == false));
}

#[test]
fn rollout_is_reproducible_for_a_seed_and_differs_across_seeds() {
    assert_eq!(
        rollout("cartpole", "9", "50"),
        rollout("cartpole", "9", "50")
    );
    assert_ne!(
        rollout("cartpole", "9", "50"),
        rollout("cartpole", "10", "50")
    );
}

#[test]
fn stochastic_envs_roll_out_reproducibly_with_their_internal_state() {
    for (name, id, obs_width) in [
        ("kicked_pendulum", "KickedPendulum-v0", 3),
        ("gusty_cartpole", "GustyCartPole-v0", 4),
        ("wet_chicken", "WetChicken-v0", 2),
        ("bimodal_walk", "BimodalWalk-v0", 1),
    ] {
        let records = rollout(name, "4", "60");
        assert_eq!(records.len(), 60, "{name}");
        assert_eq!(records[0]["env"], id);
        assert!(records[0]["state"].is_array(), "{name}: state at reset");
        assert_eq!(
            records[0]["next_obs"].as_array().map(Vec::len),
            Some(obs_width)
        );
        assert_eq!(records, rollout(name, "4", "60"), "{name}: same seed");
        assert_ne!(records, rollout(name, "5", "60"), "{name}: other seed");
    }
}

#[test]
fn env_list_names_every_environment() {
    let output = wm(&["env", "list"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let listing = stdout(&output);
    for name in wm_envs::ENV_NAMES {
        assert!(
            listing.lines().any(|line| line.starts_with(name)),
            "{name} missing:\n{listing}"
        );
    }
}

#[test]
fn seeded_reset_gives_gymnasiums_initial_state() {
    // gymnasium 1.4.0: gym.make("CartPole-v1").reset(seed=3)[0] == [-0.04143508, -0.02631895, 0.03012745, 0.0082162]
    let first = &rollout("cartpole", "3", "1")[0];
    let obs: Vec<f64> = first["obs"]
        .as_array()
        .expect("obs")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    let expected = [-0.04143508, -0.02631895, 0.03012745, 0.0082162];
    for (got, want) in obs.iter().zip(expected) {
        assert!((got - want).abs() < 1e-7, "obs {obs:?} != {expected:?}");
    }
}

#[test]
fn unknown_environment_is_a_one_line_error_with_the_known_names() {
    let output = wm(&["env", "rollout", "--env", "acrobot", "--steps", "3"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line expected: {message}");
    assert!(
        message.contains("acrobot")
            && message.contains("cartpole")
            && !message.contains("panicked"),
        "{message}"
    );
}

#[test]
fn bad_flag_is_a_one_line_usage_error() {
    let output = wm(&[
        "env", "rollout", "--env", "cartpole", "--steps", "3", "--speed", "9",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line expected: {message}");
    assert!(message.contains("--speed"), "{message}");
}

#[test]
fn help_explains_every_rollout_flag() {
    let output = wm(&["env", "rollout", "--help"]);
    assert!(output.status.success());
    let help = stdout(&output);
    for flag in ["--env", "--seed", "--steps", "--policy"] {
        assert!(help.contains(flag), "{flag} missing from help:\n{help}");
    }
}

#[test]
fn unknown_device_is_a_one_line_error() {
    let output = wm(&["device", "--device", "tpu"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("unknown device `tpu`"),
        "{}",
        stderr(&output)
    );
}
