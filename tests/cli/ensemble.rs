//! The probabilistic ensemble through the CLI: `wm train` of a tiny ensemble config, `wm eval`
//! of its exact mixture NLL, and a resume from its checkpoint.

use crate::cli::train::{config_path, train_tiny};
use crate::util::{stderr, stdout, wm};

#[test]
fn ensemble_run_trains_evaluates_its_mixture_nll_and_resumes_from_its_checkpoint() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = train_tiny(&config_path("pendulum_ensemble.ron"), runs.path());
    let name = run.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(name.starts_with("pendulum__ensemble__0__"), "{name}");

    let scalars = wm_train::tensorboard::read_scalars(&run).expect("event file should parse");
    for tag in [
        "loss/recon",
        "loss/reward",
        "loss/termination",
        "loss/log_std_bounds",
        "eval/nll_exact",
    ] {
        assert!(
            scalars.iter().any(|s| s.tag == tag),
            "tag {tag} missing from {:?}",
            scalars.iter().map(|s| &s.tag).collect::<Vec<_>>()
        );
    }

    let eval = wm(&["eval", "--run", run.to_str().expect("utf-8")]);
    assert!(eval.status.success(), "wm eval failed: {}", stderr(&eval));
    let printed = stdout(&eval);
    assert!(
        printed.contains("ensemble") && printed.contains("after 20 updates"),
        "{printed}"
    );
    assert!(printed.contains("exact"), "no exact NLL printed: {printed}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).expect("eval.json"))
            .expect("json");
    let nll = report["nll"].as_array().expect("an nll list");
    assert_eq!(nll.len(), 1, "one exact estimate: {nll:?}");
    let value = nll[0]["nats_per_dim"].as_f64().expect("a number");
    assert!(value.is_finite(), "NLL {value}");

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
}
