//! `wm play` and the policy return of `wm eval`, on tiny trained runs.

use std::path::{Path, PathBuf};

use super::train::{TINY, TINY_MLP, train_tiny};
use crate::util::{stderr, stdout, wm, wm_in};

/// The seed of the trainer's policy evaluation episodes for config seed 0 (`2 * EVAL_SEED_OFFSET`).
const TRAINER_POLICY_SEED: u64 = 2 * wm_train::trainer::EVAL_SEED_OFFSET;

/// Trains a tiny CartPole run acting with `policy` (a `data.policy` value as JSON), with one
/// policy evaluation episode at the end.
pub(crate) fn train_closed_loop(config: &str, policy: &str, runs: &Path) -> PathBuf {
    let mut args = vec!["train", "--config", config, "--quiet"];
    args.extend_from_slice(&["--runs-dir", runs.to_str().expect("utf-8")]);
    args.extend_from_slice(TINY);
    args.extend_from_slice(TINY_MLP);
    args.extend_from_slice(&["--set", policy, "--set", "eval.policy_episodes=1"]);
    let output = wm_in(env!("CARGO_MANIFEST_DIR"), &args);
    assert!(
        output.status.success(),
        "wm train failed: {}",
        stderr(&output)
    );
    std::fs::read_dir(runs)
        .expect("runs")
        .next()
        .expect("a run")
        .expect("entry")
        .path()
}

/// `(seed, return, length)` of each row of `wm play`'s table.
fn played(stdout: &str) -> Vec<(u64, f64, usize)> {
    let table = stdout
        .split("episode  seed  return  length\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no results table in {stdout}"));
    table
        .lines()
        .take_while(|line| !line.starts_with("mean return"))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 4, "row {line:?}");
            (
                fields[1].parse().expect("seed"),
                fields[2].parse().expect("return"),
                fields[3].parse().expect("length"),
            )
        })
        .collect()
}

fn policy_return(run: &Path) -> f64 {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).expect("eval.json"))
            .expect("json");
    report["policy_return"]
        .as_f64()
        .unwrap_or_else(|| panic!("no policy_return in {report}"))
}

#[test]
fn play_runs_the_trained_actor_reproducing_the_trainers_return_with_ascii_and_png_renderings() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = train_closed_loop(
        "configs/cartpole_cvae_actor.ron",
        r#"data.policy={"Actor": {"hidden": [16], "horizon": 4, "starts": 16}}"#,
        runs.path(),
    );
    let trainer_return = policy_return(&run);
    let run_arg = run.to_str().expect("utf-8");
    let seed = TRAINER_POLICY_SEED.to_string();
    let args = [
        "play",
        "--run",
        run_arg,
        "--episodes",
        "2",
        "--seed",
        &seed,
        "--render",
        "ascii",
    ];
    let output = wm(&args);
    assert!(output.status.success(), "wm play: {}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("CartPole-v1: the actor of "),
        "names what acts: {text}"
    );
    let episodes = played(&text);
    assert_eq!(
        episodes.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![TRAINER_POLICY_SEED, TRAINER_POLICY_SEED + 1],
        "{text}"
    );
    // The same policy code and seed as the trainer's final policy evaluation: the same return.
    assert_eq!(episodes[0].1, trainer_return, "{text}");
    for (_, ret, length) in &episodes {
        assert_eq!(*ret, *length as f64, "CartPole pays 1 per step: {text}");
    }
    // One ASCII line per step, plus each episode's reset line; each shows the cart.
    let steps: Vec<&str> = text.lines().filter(|l| l.starts_with("t=")).collect();
    let total: usize = episodes.iter().map(|e| e.2).sum();
    assert_eq!(steps.len(), total + 2, "{text}");
    assert!(
        steps.iter().all(|l| l.contains('[') && l.contains(']')),
        "{text}"
    );
    let mean = format!("mean return {:.1}", (episodes[0].1 + episodes[1].1) / 2.0);
    assert!(text.contains(&mean), "{mean} in {text}");
    // No exploration: playing again prints the same.
    assert_eq!(stdout(&wm(&args)), text, "wm play is deterministic");

    // `wm eval` plays the same policy on the trainer's seeds.
    let output = wm(&["eval", "--run", run_arg, "--policy-episodes", "1"]);
    assert!(output.status.success(), "wm eval: {}", stderr(&output));
    let want = format!("acting policy on the real environment: mean return {trainer_return:.1}");
    assert!(
        stdout(&output).contains(&want),
        "{want} in {}",
        stdout(&output)
    );
    assert_eq!(policy_return(&run), trainer_return);

    // PNG frames: one per step and one for the reset.
    let frames = tempfile::tempdir().expect("temp dir");
    let out = frames.path().join("frames");
    let output = wm(&[
        "play",
        "--run",
        run_arg,
        "--episodes",
        "1",
        "--seed",
        &seed,
        "--render",
        "png",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "wm play png: {}", stderr(&output));
    let length = episodes[0].2;
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("frames folder")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names.len(), length + 1, "{names:?}");
    assert_eq!(names[0], "episode_000_step_0000.png");
    assert_eq!(names[length], format!("episode_000_step_{length:04}.png"));
    let png = std::fs::read(out.join(&names[0])).expect("frame");
    assert_eq!(&png[1..4], b"PNG", "a PNG file");
}

#[test]
fn play_acts_with_the_planner_of_a_planner_run() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = train_closed_loop(
        "configs/cartpole_cvae_cem.ron",
        r#"data.policy={"Planner": {"kind": "Cem", "horizon": 3, "candidates": 16, "elites": 4, "iterations": 1}}"#,
        runs.path(),
    );
    let trainer_return = policy_return(&run);
    let seed = TRAINER_POLICY_SEED.to_string();
    let output = wm(&[
        "play",
        "--run",
        run.to_str().expect("utf-8"),
        "--episodes",
        "1",
        "--seed",
        &seed,
    ]);
    assert!(output.status.success(), "wm play: {}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("CartPole-v1: the planner of "), "{text}");
    let episodes = played(&text);
    assert_eq!(episodes.len(), 1, "{text}");
    // The planner's sampling is seeded like the trainer's evaluation: the same return.
    assert_eq!(episodes[0].1, trainer_return, "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("t=")),
        "no rendering unless asked: {text}"
    );
}

#[test]
fn play_refuses_bad_input_with_one_line_errors_and_writes_nothing() {
    let runs = tempfile::tempdir().expect("temp dir");
    // A run that collected with random actions has no policy to play.
    let random = train_tiny(&super::train::config_path("cartpole_cvae.ron"), runs.path());
    let random_arg = random.to_str().expect("utf-8");
    let scratch = tempfile::tempdir().expect("temp dir");
    let out = scratch.path().join("frames");
    let out_arg = out.to_str().expect("utf-8");
    let a_file = scratch.path().join("a_file");
    std::fs::write(&a_file, "x").expect("file");
    let missing = scratch.path().join("no_such_run");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["play", "--run", missing.to_str().expect("utf-8")],
            "no such run folder",
        ),
        (
            vec![
                "play", "--run", random_arg, "--render", "ascii", "--out", out_arg,
            ],
            "no trained policy to play",
        ),
        (
            vec!["play", "--run", random_arg, "--episodes", "0"],
            "--episodes must be between 1 and",
        ),
        (
            vec!["play", "--run", random_arg, "--render", "png"],
            "--render png needs --out DIR",
        ),
        (
            vec![
                "play",
                "--run",
                random_arg,
                "--render",
                "ascii",
                "--out",
                a_file.to_str().expect("utf-8"),
            ],
            "exists and is not a folder",
        ),
        (
            vec!["eval", "--run", random_arg, "--policy-episodes", "3"],
            "acts with random actions",
        ),
    ];
    for (args, want) in cases {
        let output = wm(&args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(
            message.contains(want),
            "{args:?}: want {want:?} in {message}"
        );
        assert_eq!(message.trim_end().lines().count(), 1, "{args:?}: {message}");
        assert!(!out.exists(), "{args:?} created {}", out.display());
    }
    // `wm eval` on a random run without the flag plays nothing and says nothing about it.
    let output = wm(&["eval", "--run", random_arg]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !stdout(&output).contains("acting policy"),
        "{}",
        stdout(&output)
    );
}
