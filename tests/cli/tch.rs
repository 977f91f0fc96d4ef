//! `wm` with the libtorch backend (`--features tch`): every model trains with the learner on
//! `tch-cpu` (the rollout workers act on flex), and its checkpoint evaluates on either backend.

use std::path::{Path, PathBuf};

use crate::cli::train::{TINY, TINY_MLP, TINY_RSSM, config_path};
use crate::util::{stderr, stdout, wm};

fn train_on_tch(config: &str, runs: &Path, extra: &[&str]) -> PathBuf {
    let config = config_path(config);
    let mut args = vec![
        "train",
        "--config",
        &config,
        "--runs-dir",
        runs.to_str().expect("utf-8 path"),
        "--quiet",
        "--device",
        "tch-cpu",
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(if config.contains("rssm") {
        TINY_RSSM
    } else {
        TINY_MLP
    });
    if config.contains("rssm_categorical") {
        args.extend_from_slice(&[
            "--set",
            r#"model.latent={"Categorical": {"groups": 4, "classes": 4, "unimix": 0.01}}"#,
        ]);
    }
    args.extend_from_slice(extra);
    let output = wm(&args);
    assert!(
        output.status.success(),
        "wm train --device tch-cpu {config} failed: {}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("after 20 updates"),
        "{}",
        stdout(&output)
    );
    std::fs::read_dir(runs)
        .expect("runs dir")
        .next()
        .expect("one run folder")
        .expect("entry")
        .path()
}

#[test]
fn tch_cpu_trains_every_model_and_the_checkpoint_evaluates_on_both_backends() {
    for config in [
        "cartpole_cvae.ron",
        "pendulum_cvae.ron",
        "cartpole_gaussian_mlp.ron",
        "pendulum_gaussian_mlp.ron",
        "pendulum_ensemble.ron",
        "cartpole_deterministic_mlp.ron",
        "pendulum_deterministic_mlp.ron",
        "cartpole_rssm.ron",
        "pendulum_rssm.ron",
        "cartpole_rssm_categorical.ron",
        "pendulum_rssm_categorical.ron",
    ] {
        let runs = tempfile::tempdir().expect("temp dir");
        let run = train_on_tch(config, runs.path(), &[]);
        let scalars = wm_train::tensorboard::read_scalars(&run).expect("events");
        let losses: Vec<f32> = scalars
            .iter()
            .filter(|s| s.tag == "loss/total")
            .map(|s| s.value)
            .collect();
        assert_eq!(
            losses.len(),
            4,
            "{config}: loss/total every 5 of 20 updates"
        );
        assert!(losses.iter().all(|l| l.is_finite()), "{config}: {losses:?}");
        for device in ["cpu", "tch-cpu"] {
            let output = wm(&[
                "eval",
                "--run",
                run.to_str().expect("utf-8"),
                "--device",
                device,
                "--iwae-samples",
                "1",
            ]);
            assert!(
                output.status.success(),
                "{config}: wm eval --device {device} failed: {}",
                stderr(&output)
            );
            assert!(
                stdout(&output).contains("after 20 updates"),
                "{config}: {}",
                stdout(&output)
            );
        }
    }
}

#[test]
fn tch_cpu_learner_with_planning_workers_on_cpu() {
    // The workers plan over the published model on flex while the learner trains on libtorch.
    let runs = tempfile::tempdir().expect("temp dir");
    let policy = r#"data.policy={"Planner": {"kind": "Cem", "horizon": 4, "candidates": 16, "elites": 4, "iterations": 2}}"#;
    let run = train_on_tch(
        "pendulum_cvae.ron",
        runs.path(),
        &["--set", policy, "--set", "eval.policy_episodes=1"],
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).expect("eval.json"))
            .expect("json");
    assert!(
        report["policy_return"]
            .as_f64()
            .is_some_and(|r| (-2000.0..=0.0).contains(&r)),
        "{report}"
    );
}

#[test]
fn tch_cpu_device_check_computes_the_right_gradient() {
    let output = wm(&["device", "--device", "tch-cpu"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("device `tch-cpu` works"),
        "{}",
        stdout(&output)
    );
}
