//! The non-finite guard in a real run: replayed transitions whose observations are finite but
//! huge (1e30, which the replay accepts) make every loss infinite; the run skips those updates,
//! stops after `schedule.max_nonfinite_in_a_row` of them with an error, and keeps the last
//! good checkpoint byte for byte.

use crate::cli::train::{config_path, train_tiny};
use crate::util::{stderr, wm};
use wm_replay::{EpisodeBuilder, LoadMode, ReplayBuffer};

#[test]
fn a_run_fed_poisoned_batches_stops_with_an_error_and_keeps_the_last_good_checkpoint() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = train_tiny(&config_path("cartpole_gaussian_mlp.ron"), runs.path());
    let good_checkpoint = std::fs::read(run.join("checkpoint.wmck")).expect("checkpoint");

    // Inject: ten times the real data in episodes of huge observations.
    let env = wm_envs::make("cartpole").expect("env");
    let spec = wm_train::data::replay_spec(env.as_ref());
    let (mut replay, _) = ReplayBuffer::open(
        run.join("replay_train.wmrb"),
        spec.clone(),
        100_000,
        LoadMode::Strict,
    )
    .expect("open replay");
    let real = replay.n_transitions();
    while replay.n_transitions() < 11 * real {
        let huge = [1e30f32; 4];
        let mut episode = EpisodeBuilder::new(&spec, &huge).expect("builder");
        for _ in 0..100 {
            episode.push(&[0.0], 1.0, &huge).expect("push");
        }
        replay
            .insert(episode.finish(false, true).expect("finish"))
            .expect("insert");
    }
    replay.flush().expect("flush");
    drop(replay);

    let output = wm(&[
        "train",
        "--resume",
        run.to_str().expect("utf-8"),
        "--quiet",
        "--set",
        "schedule.updates=60",
        "--set",
        "schedule.max_nonfinite_in_a_row=5",
    ]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("the loss diverged: 5 updates in a row") && !message.contains("panicked"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(run.join("checkpoint.wmck")).expect("checkpoint"),
        good_checkpoint,
        "the last good checkpoint was replaced"
    );
    assert!(!run.join("checkpoint.tmp").exists());
}
