//! Config values out of range: a one-line error naming the field, a non-zero exit (not a
//! panic's 101), and no run folder left behind.

use crate::cli::train::config_path;
use crate::util::{stderr, wm};

/// Runs `wm train` with `overrides` in an empty runs folder and returns its stderr, after checking
/// the exit status and that nothing was created.
fn train_fails_cleanly(config: &str, overrides: &[&str]) -> String {
    let runs = tempfile::tempdir().expect("temp dir");
    let runs_dir = runs.path().join("runs");
    let config = config_path(config);
    let mut args = vec![
        "train",
        "--config",
        config.as_str(),
        "--runs-dir",
        runs_dir.to_str().expect("utf-8 path"),
        "--quiet",
    ];
    for assignment in overrides {
        args.extend_from_slice(&["--set", assignment]);
    }
    let output = wm(&args);
    let message = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected a clean error exit, got {:?}: {message}",
        output.status
    );
    assert!(!message.contains("panicked"), "{message}");
    assert_eq!(
        message.trim_end().lines().count(),
        1,
        "expected a one-line error: {message}"
    );
    assert!(
        !runs_dir.exists(),
        "a run folder was created before validation: {:?}",
        std::fs::read_dir(&runs_dir).map(|d| d.count())
    );
    message
}

#[test]
fn zero_latent_dim_is_a_one_line_error_and_leaves_no_run_folder() {
    let message = train_fails_cleanly("cartpole_cvae.ron", &["model.latent_dim=0"]);
    assert!(
        message.contains("--set: field `model.latent_dim` must be between 1 and"),
        "{message}"
    );
}

#[test]
fn negative_rssm_free_nats_is_a_one_line_error_and_leaves_no_run_folder() {
    let message = train_fails_cleanly("cartpole_rssm.ron", &["model.free_nats=-1"]);
    assert!(
        message.contains("--set: field `model.free_nats` must be in [0, 1000000], got -1"),
        "{message}"
    );
}

#[test]
fn more_elites_than_candidates_is_a_one_line_error_and_leaves_no_run_folder() {
    let message = train_fails_cleanly("cartpole_cvae_cem.ron", &["data.policy.elites=500"]);
    assert!(
        message.contains(
            "--set: field `data.policy.elites` must be between 1 and candidates (200), got 500"
        ),
        "{message}"
    );
}

#[test]
fn a_bad_value_in_the_file_is_reported_at_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(config_path("cartpole_cvae_cem.ron")).expect("config");
    let bad = text.replace("elites: 20", "elites: 201");
    let path = dir.path().join("bad.ron");
    std::fs::write(&path, bad).expect("write");
    let runs_dir = dir.path().join("runs");
    let output = wm(&[
        "train",
        "--config",
        path.to_str().expect("utf-8"),
        "--runs-dir",
        runs_dir.to_str().expect("utf-8"),
        "--quiet",
    ]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    let line = text
        .lines()
        .position(|l| l.contains("elites: 20"))
        .expect("the config has elites")
        + 1;
    assert!(
        message.contains(&format!("bad.ron:{line}: field `data.policy.elites`")),
        "{message}"
    );
    assert!(!runs_dir.exists());
}
