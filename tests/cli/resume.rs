//! `wm train --resume`: overrides are validated against the checkpoint before `config.ron` is
//! rewritten, a failed resume changes nothing, a run killed before its first checkpoint
//! resumes with its replay, and a run folder of the old format is refused with what to do.

use crate::cli::train::{config_path, train_tiny};
use crate::util::{stderr, stdout, wm};

fn resume(run: &std::path::Path, overrides: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "--resume", run.to_str().expect("utf-8"), "--quiet"];
    for assignment in overrides {
        args.extend_from_slice(&["--set", assignment]);
    }
    wm(&args)
}

#[test]
fn an_override_that_does_not_fit_the_checkpoint_fails_and_changes_nothing() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = train_tiny(&config_path("cartpole_gaussian_mlp.ron"), runs.path());
    let config_before = std::fs::read(run.join("config.ron")).expect("config");
    let checkpoint_before = std::fs::read(run.join("checkpoint.wmck")).expect("checkpoint");
    let replay_before = std::fs::read(run.join("replay_train.wmrb")).expect("replay");

    let output = resume(&run, &["model.hidden=[32, 32]", "schedule.updates=30"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("do not fit the configured model") && !message.contains("panicked"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(run.join("config.ron")).expect("config"),
        config_before,
        "config.ron was rewritten"
    );
    assert!(!run.join("config.prev.ron").exists());
    assert_eq!(
        std::fs::read(run.join("checkpoint.wmck")).expect("checkpoint"),
        checkpoint_before
    );
    assert_eq!(
        std::fs::read(run.join("replay_train.wmrb")).expect("replay"),
        replay_before
    );

    // An invalid override is refused before anything is opened.
    let output = resume(&run, &["optim.lr=-1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("--set: field `optim.lr`"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read(run.join("config.ron")).expect("config"),
        config_before
    );

    // A fitting override is applied, and the previous config kept.
    let output = resume(&run, &["schedule.updates=30"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(run.join("config.prev.ron")).expect("config.prev.ron"),
        config_before
    );
    let config = std::fs::read_to_string(run.join("config.ron")).expect("config");
    assert!(config.contains("updates: 30"), "{config}");
}

#[test]
fn a_run_killed_before_its_first_checkpoint_resumes_from_update_zero_with_its_replay() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = train_tiny(&config_path("cartpole_deterministic_mlp.ron"), runs.path());
    std::fs::remove_file(run.join("checkpoint.wmck")).expect("remove the checkpoint");
    let output = resume(&run, &[]);
    assert!(
        output.status.success(),
        "resume without a checkpoint failed: {}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("20 updates this run"),
        "{}",
        stdout(&output)
    );
    assert!(run.join("checkpoint.wmck").is_file());

    let empty = tempfile::tempdir().expect("temp dir");
    std::fs::copy(run.join("config.ron"), empty.path().join("config.ron")).expect("copy config");
    let output = resume(empty.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("missing") && stderr(&output).contains("--new-replay"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_old_format_run_folder_is_refused_with_what_to_do() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = train_tiny(&config_path("cartpole_gaussian_mlp.ron"), runs.path());
    // Format 1: the same magic, version 1 (its actor-critic lived in agent.wmck).
    let mut bytes = std::fs::read(run.join("checkpoint.wmck")).expect("checkpoint");
    bytes[6..8].copy_from_slice(&1u16.to_le_bytes());
    std::fs::write(run.join("checkpoint.wmck"), &bytes).expect("write");
    std::fs::write(run.join("agent.wmck"), b"WMCKPT\x01\x00").expect("write");
    for output in [
        resume(&run, &[]),
        wm(&["eval", "--run", run.to_str().expect("utf-8")]),
    ] {
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(
            message.contains("format 1") && message.contains("wm train --config"),
            "{message}"
        );
    }
}
