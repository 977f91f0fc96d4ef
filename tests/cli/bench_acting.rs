use serde_json::Value;

use crate::util::{stderr, stdout, wm};

#[test]
fn bench_acting_measures_the_carried_and_the_window_state_with_a_tiny_planner() {
    let output = wm(&[
        "bench",
        "acting",
        "--config",
        "configs/pendulum_rssm_cem.ron",
        "--set",
        "model.deter=8",
        "--set",
        "model.hidden=8",
        "--set",
        "model.encoder_hidden=[8]",
        "--set",
        "model.decoder_hidden=[8]",
        "--set",
        "model.head_hidden=[8]",
        "--set",
        "data.policy.candidates=8",
        "--set",
        "data.policy.elites=2",
        "--set",
        "data.policy.iterations=1",
        "--set",
        "data.policy.horizon=3",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--json",
    ]);
    assert!(
        output.status.success(),
        "wm bench acting failed: {}",
        stderr(&output)
    );
    let results: Vec<Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line should be JSON"))
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0]["memory"], "window of 8 (rebuilt per action)");
    assert_eq!(results[1]["memory"], "carried");
    for result in &results {
        assert_eq!(result["env"], "Pendulum-v1", "{result}");
        assert_eq!(result["model"], "rssm_gaussian", "{result}");
        assert!(
            result["median_steps_per_s"]
                .as_f64()
                .is_some_and(|r| r > 0.0),
            "{result}"
        );
    }
}

#[test]
fn bench_acting_rejects_an_unknown_memory_and_a_random_policy() {
    let output = wm(&["bench", "acting", "--memory", "forever", "--steps", "1"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("unknown --memory `forever`"),
        "{}",
        stderr(&output)
    );
    let output = wm(&[
        "bench",
        "acting",
        "--config",
        "configs/pendulum_rssm.ron",
        "--steps",
        "1",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("data.policy is Random"),
        "{}",
        stderr(&output)
    );
}
