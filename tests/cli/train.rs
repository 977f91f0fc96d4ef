use std::path::{Path, PathBuf};

use crate::util::{stderr, stdout, wm};

/// Flags that shrink a config to a run of a second or two.
pub(crate) const TINY: &[&str] = &[
    "--set",
    "data.prefill_steps=400",
    "--set",
    "data.eval_steps=150",
    "--set",
    "schedule.updates=20",
    "--set",
    "schedule.log_every=5",
    "--set",
    "schedule.eval_every=10",
    "--set",
    "schedule.checkpoint_every=10",
    "--set",
    "optim.batch_size=32",
    "--set",
    "eval.iwae_samples=[1, 8]",
    "--set",
    "eval.max_nll_transitions=64",
    "--set",
    "eval.policy_episodes=0",
];

/// Model sizes that make a run of a second or two: one-step models, and the RSSM.
pub(crate) const TINY_MLP: &[&str] = &["--set", "model.hidden=[16]"];
pub(crate) const TINY_RSSM: &[&str] = &[
    "--set",
    "model.deter=16",
    "--set",
    "model.hidden=16",
    "--set",
    "model.encoder_hidden=[16]",
    "--set",
    "model.decoder_hidden=[16]",
    "--set",
    "model.head_hidden=[16]",
    "--set",
    "optim.batch_size=4",
    "--set",
    "optim.seq_len=12",
];

pub(crate) fn train_tiny(config: &str, runs: &Path) -> PathBuf {
    let mut args = vec![
        "train",
        "--config",
        config,
        "--runs-dir",
        runs.to_str().expect("utf-8 path"),
        "--quiet",
    ];
    args.extend_from_slice(TINY);
    // The file name, not the path: a checkout's folder may contain "rssm" too.
    let name = Path::new(config)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(config);
    args.extend_from_slice(if name.contains("rssm") {
        TINY_RSSM
    } else {
        TINY_MLP
    });
    if name.contains("rssm_categorical") {
        args.extend_from_slice(&[
            "--set",
            r#"model.latent={"Categorical": {"groups": 4, "classes": 4, "unimix": 0.01}}"#,
        ]);
    }
    let output = wm(&args);
    assert!(
        output.status.success(),
        "wm train failed: {}",
        stderr(&output)
    );
    let run = std::fs::read_dir(runs)
        .expect("runs dir")
        .next()
        .expect("one run folder")
        .expect("entry")
        .path();
    assert!(
        stdout(&output).contains("run folder:"),
        "{}",
        stdout(&output)
    );
    run
}

pub(crate) fn config_path(name: &str) -> String {
    format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn train_writes_a_run_folder_that_eval_reloads_and_resume_continues() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = train_tiny(&config_path("cartpole_cvae.ron"), runs.path());
    let name = run.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(name.starts_with("cartpole__cvae__0__"), "{name}");
    for file in [
        "config.ron",
        "checkpoint.wmck",
        "replay_train.wmrb",
        "replay_eval.wmrb",
        "eval.json",
    ] {
        assert!(
            run.join(file).is_file(),
            "{file} missing in {}",
            run.display()
        );
    }

    let scalars = wm_train::tensorboard::read_scalars(&run).expect("event file should parse");
    let steps: Vec<i64> = scalars
        .iter()
        .filter(|s| s.tag == "loss/total")
        .map(|s| s.step)
        .collect();
    assert_eq!(
        steps,
        vec![5, 10, 15, 20],
        "loss/total logged every 5 updates"
    );
    for tag in [
        "loss/recon",
        "loss/kl",
        "loss/reward",
        "loss/termination",
        "train/grad_norm",
        "train/nonfinite_updates",
        "perf/updates_per_s",
        "eval/nll_iwae_k8",
    ] {
        assert!(
            scalars.iter().any(|s| s.tag == tag),
            "tag {tag} missing from {:?}",
            scalars.iter().map(|s| &s.tag).collect::<Vec<_>>()
        );
    }

    let eval = wm(&[
        "eval",
        "--run",
        run.to_str().expect("utf-8"),
        "--iwae-samples",
        "1,4",
    ]);
    assert!(eval.status.success(), "wm eval failed: {}", stderr(&eval));
    assert!(
        stdout(&eval).contains("after 20 updates") && stdout(&eval).contains("k = 4"),
        "{}",
        stdout(&eval)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).expect("eval.json"))
            .expect("json");
    assert_eq!(report["nll"].as_array().map(Vec::len), Some(2));

    let resumed = wm(&[
        "train",
        "--resume",
        run.to_str().expect("utf-8"),
        "--set",
        "schedule.updates=30",
        "--quiet",
    ]);
    assert!(
        resumed.status.success(),
        "resume failed: {}",
        stderr(&resumed)
    );
    assert!(
        stdout(&resumed).contains("after 30 updates"),
        "{}",
        stdout(&resumed)
    );
    let after: Vec<i64> = wm_train::tensorboard::read_scalars(&run)
        .expect("parse")
        .iter()
        .filter(|s| s.tag == "loss/total")
        .map(|s| s.step)
        .collect();
    assert_eq!(
        after,
        vec![5, 10, 15, 20, 25, 30],
        "the resumed run continues the step counter"
    );
}

#[test]
fn every_shipped_config_parses_and_trains_briefly() {
    for config in [
        "cartpole_gaussian_mlp.ron",
        "cartpole_deterministic_mlp.ron",
        "pendulum_cvae.ron",
        "pendulum_gaussian_mlp.ron",
        "pendulum_deterministic_mlp.ron",
        "cartpole_rssm_categorical.ron",
        "pendulum_rssm.ron",
        "cartpole_cvae_cem.ron",
        "cartpole_cvae_actor.ron",
        "pendulum_rssm_cem.ron",
        "pendulum_rssm_actor.ron",
        "cartpole_ensemble.ron",
        "pendulum_ensemble_cem.ron",
    ] {
        let runs = tempfile::tempdir().expect("temp dir");
        let run = train_tiny(&config_path(config), runs.path());
        assert!(run.join("eval.json").is_file(), "{config}: no eval.json");
    }
}

#[test]
fn malformed_config_names_file_line_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.ron");
    let text = std::fs::read_to_string(config_path("cartpole_cvae.ron"))
        .expect("config")
        .replace("lr: 0.001", "lr: -0.5");
    std::fs::write(&path, text).expect("write");
    let output = wm(&[
        "train",
        "--config",
        path.to_str().expect("utf-8"),
        "--runs-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("bad.ron:") && message.contains("`optim.lr`") && message.contains("-0.5"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn corrupt_checkpoint_is_reported_not_panicked_on() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = train_tiny(&config_path("cartpole_gaussian_mlp.ron"), runs.path());
    let checkpoint = run.join("checkpoint.wmck");
    let mut bytes = std::fs::read(&checkpoint).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&checkpoint, bytes).expect("write");
    let output = wm(&["eval", "--run", run.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("corrupt")
            && message.contains("checksum")
            && !message.contains("panicked"),
        "{message}"
    );
}

#[test]
fn deterministic_mode_gives_identical_loss_curves_and_metrics_for_a_seed() {
    let run = |seed: &str| {
        let runs = tempfile::tempdir().expect("temp dir");
        let mut args = vec![
            "train",
            "--config",
            "configs/pendulum_cvae.ron",
            "--seed",
            seed,
            "--deterministic",
            "--quiet",
        ];
        args.extend_from_slice(&["--runs-dir", runs.path().to_str().expect("utf-8")]);
        args.extend_from_slice(TINY);
        args.extend_from_slice(TINY_MLP);
        args.extend_from_slice(&[
            "--set",
            "schedule.updates=60",
            "--set",
            "pipeline.replay_ratio=0.25",
        ]);
        let output = crate::util::wm_in(env!("CARGO_MANIFEST_DIR"), &args);
        assert!(
            output.status.success(),
            "wm train failed: {}",
            stderr(&output)
        );
        let run = std::fs::read_dir(runs.path())
            .expect("runs")
            .next()
            .expect("a run")
            .expect("entry")
            .path();
        let losses: Vec<(i64, f32)> = wm_train::tensorboard::read_scalars(&run)
            .expect("events")
            .into_iter()
            .filter(|s| s.tag.starts_with("loss/"))
            .map(|s| (s.step, s.value))
            .collect();
        (
            losses,
            std::fs::read_to_string(run.join("eval.json")).expect("eval.json"),
        )
    };
    let first = run("3");
    assert!(
        first.0.len() >= 12 * 5,
        "loss terms logged every 5 of 60 updates: {}",
        first.0.len()
    );
    assert_eq!(first, run("3"), "same seed, same loss curve and metrics");
    assert_ne!(first.1, run("4").1, "another seed, other numbers");
}

#[test]
fn rssm_run_trains_reloads_and_compares_with_a_cvae_run_on_the_same_episodes() {
    let runs = tempfile::tempdir().expect("temp dir");
    let rssm = train_tiny(&config_path("pendulum_rssm.ron"), &runs.path().join("rssm"));
    let cvae = train_tiny(&config_path("pendulum_cvae.ron"), &runs.path().join("cvae"));
    let scalars = wm_train::tensorboard::read_scalars(&rssm).expect("events");
    // The RSSM's likelihood is logged periodically (k = periodic_iwae_samples = 16) and at the end.
    for tag in [
        "loss/recon",
        "loss/reward",
        "loss/cont",
        "loss/dyn",
        "loss/rep",
        "eval/open_loop_rmse_h5",
        "eval/nll_predictive_k16",
        "eval/nll_sequence_iwae_k8",
    ] {
        assert!(scalars.iter().any(|s| s.tag == tag), "{tag} missing");
    }
    let output = wm(&[
        "eval",
        "--run",
        rssm.to_str().expect("utf-8"),
        "--compare",
        cvae.to_str().expect("utf-8"),
    ]);
    assert!(
        output.status.success(),
        "wm eval --compare failed: {}",
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(
        text.contains("rssm_gaussian (20)")
            && text.contains("cvae (20)")
            && text.contains("one protocol"),
        "{text}"
    );
    // The RSSM's predictive NLL sits beside the cVAE's IWAE on the same transitions, both finite.
    let row = text
        .lines()
        .find(|l| l.starts_with("NLL next observation, k = 8"))
        .unwrap_or_else(|| panic!("no k = 8 NLL row: {text}"));
    assert!(
        row.contains("(predictive k = 8)") && row.contains("(IWAE k = 8)") && !row.contains("NaN"),
        "{row}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rssm.join("eval.json")).expect("eval.json"))
            .expect("json");
    let estimators: Vec<&str> = report["nll"]
        .as_array()
        .expect("nll")
        .iter()
        .filter_map(|e| e["estimator"].as_str())
        .collect();
    assert_eq!(
        estimators,
        ["predictive", "sequence_iwae", "predictive", "sequence_iwae"],
        "{report}"
    );
    let plot = wm(&[
        "plot",
        "--run",
        rssm.to_str().expect("utf-8"),
        "--compare",
        cvae.to_str().expect("utf-8"),
        "--episodes",
        "2",
    ]);
    assert!(plot.status.success(), "wm plot failed: {}", stderr(&plot));
    let png = std::fs::read(rssm.join("open_loop.png")).expect("open_loop.png");
    assert_eq!(&png[1..4], b"PNG", "the plot is a PNG file");
}

#[test]
fn closed_loop_run_acts_with_the_planner_and_logs_returns_against_env_steps() {
    let runs = tempfile::tempdir().expect("temp dir");
    let mut args = vec![
        "train",
        "--config",
        "configs/pendulum_cvae_cem.ron",
        "--quiet",
    ];
    args.extend_from_slice(&["--runs-dir", runs.path().to_str().expect("utf-8")]);
    args.extend_from_slice(TINY);
    args.extend_from_slice(TINY_MLP);
    args.extend_from_slice(&[
        "--set", r#"data.policy={"Planner": {"kind": "Cem", "horizon": 4, "candidates": 16, "elites": 4, "iterations": 2}}"#,
        "--set", "eval.policy_episodes=1",
    ]);
    let output = crate::util::wm_in(env!("CARGO_MANIFEST_DIR"), &args);
    assert!(
        output.status.success(),
        "wm train failed: {}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("acting policy on the real environment: mean return"),
        "{}",
        stdout(&output)
    );
    let run = std::fs::read_dir(runs.path())
        .expect("runs")
        .next()
        .expect("a run")
        .expect("entry")
        .path();
    let scalars = wm_train::tensorboard::read_scalars(&run).expect("events");
    let returns: Vec<_> = scalars.iter().filter(|s| s.tag == "eval/return").collect();
    assert!(!returns.is_empty(), "eval/return is logged");
    assert!(
        returns.iter().all(|s| s.step >= 400),
        "eval/return is logged against environment steps (>= the prefill): {returns:?}"
    );
    assert!(
        returns.iter().all(|s| (-2000.0..=0.0).contains(&s.value)),
        "a Pendulum return is in [-2000, 0]: {returns:?}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).expect("eval.json"))
            .expect("json");
    assert!(report["policy_return"].is_number(), "{report}");
}

#[test]
fn actor_critic_run_acts_with_the_actor_logs_its_losses_and_resumes_with_it() {
    let runs = tempfile::tempdir().expect("temp dir");
    let mut args = vec![
        "train",
        "--config",
        "configs/pendulum_cvae_actor.ron",
        "--quiet",
    ];
    args.extend_from_slice(&["--runs-dir", runs.path().to_str().expect("utf-8")]);
    args.extend_from_slice(TINY);
    args.extend_from_slice(TINY_MLP);
    args.extend_from_slice(&[
        "--set",
        r#"data.policy={"Actor": {"hidden": [16], "horizon": 4, "starts": 16}}"#,
        "--set",
        "eval.policy_episodes=1",
    ]);
    let output = crate::util::wm_in(env!("CARGO_MANIFEST_DIR"), &args);
    assert!(
        output.status.success(),
        "wm train failed: {}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("acting policy on the real environment: mean return"),
        "{}",
        stdout(&output)
    );
    let run = std::fs::read_dir(runs.path())
        .expect("runs")
        .next()
        .expect("a run")
        .expect("entry")
        .path();
    assert!(
        !run.join("agent.wmck").exists(),
        "the actor-critic is inside the one checkpoint file"
    );
    let scalars = wm_train::tensorboard::read_scalars(&run).expect("events");
    for tag in [
        "agent/actor_loss",
        "agent/critic_loss",
        "agent/entropy",
        "agent/return_scale",
        "eval/return",
    ] {
        let values: Vec<f32> = scalars
            .iter()
            .filter(|s| s.tag == tag)
            .map(|s| s.value)
            .collect();
        assert!(
            !values.is_empty() && values.iter().all(|v| v.is_finite()),
            "{tag}: {values:?}"
        );
    }
    let resumed = wm(&[
        "train",
        "--resume",
        run.to_str().expect("utf-8"),
        "--set",
        "schedule.updates=30",
        "--quiet",
    ]);
    assert!(
        resumed.status.success(),
        "resume failed: {}",
        stderr(&resumed)
    );
    let steps: Vec<i64> = wm_train::tensorboard::read_scalars(&run)
        .expect("events")
        .iter()
        .filter(|s| s.tag == "agent/critic_loss")
        .map(|s| s.step)
        .collect();
    assert_eq!(
        steps.last(),
        Some(&30),
        "the resumed run trains the restored actor-critic: {steps:?}"
    );
}

/// Learning in closed loop (gated: about half a minute on 2 cores): a small cVAE learned from
/// 1,000 random Pendulum steps and 600 more collected by CEM over it controls the real pendulum
/// far better than random actions from the same start states. Random actions average about
/// -1,200 per episode (sd about 300); the difference asked for, 400 on the mean of the three
/// paired episodes, is over 2 standard deviations of a random mean even before pairing.
#[test]
fn planning_with_a_learned_model_beats_random_actions_on_pendulum() {
    if std::env::var_os("WM_LEARNING_TESTS").is_none() {
        eprintln!("skipped: set WM_LEARNING_TESTS=1 to run the closed-loop learning test");
        return;
    }
    let runs = tempfile::tempdir().expect("temp dir");
    let output = crate::util::wm_in(
        env!("CARGO_MANIFEST_DIR"),
        &[
            "train",
            "--config",
            "configs/pendulum_cvae_cem.ron",
            "--quiet",
            "--runs-dir",
            runs.path().to_str().expect("utf-8"),
            "--set",
            "data.eval_steps=400",
            "--set",
            "pipeline.replay_ratio=1.0",
            "--set",
            "schedule.updates=600",
            "--set",
            "schedule.eval_every=100000",
            "--set",
            "schedule.checkpoint_every=100000",
            "--set",
            "eval.policy_episodes=3",
            "--set",
            "eval.iwae_samples=[1]",
        ],
    );
    assert!(
        output.status.success(),
        "wm train failed: {}",
        stderr(&output)
    );
    let run = std::fs::read_dir(runs.path())
        .expect("runs")
        .next()
        .expect("a run")
        .expect("entry")
        .path();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).expect("eval.json"))
            .expect("json");
    let planned = report["policy_return"].as_f64().expect("a policy return");

    // Random actions from the same start states (the trainer's evaluation seeds).
    use rand::{Rng, SeedableRng};
    let first = 2 * wm_train::trainer::EVAL_SEED_OFFSET;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut env = wm_envs::make("pendulum").expect("pendulum");
    let mut random = 0.0;
    for episode in 0..3 {
        env.reset(Some(first + episode));
        loop {
            let step = env
                .step(&wm_envs::Action::Continuous(vec![
                    rng.random_range(-2.0f32..=2.0),
                ]))
                .expect("step");
            random += step.reward / 3.0;
            if step.terminated || step.truncated {
                break;
            }
        }
    }
    eprintln!("pendulum: planning with the learned model {planned:.1}, random actions {random:.1}");
    assert!(
        planned > random + 400.0,
        "planning with the learned model {planned:.1} vs random actions {random:.1}"
    );
}
