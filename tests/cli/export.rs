//! `wm export --format safetensors` on a tiny trained run.

use crate::util::{stderr, stdout, wm};

#[test]
fn export_writes_named_tensors_with_metadata_and_a_reference_and_never_overwrites() {
    let runs = tempfile::tempdir().expect("temp dir");
    let run = super::play::train_closed_loop(
        "configs/cartpole_cvae_actor.ron",
        r#"data.policy={"Actor": {"hidden": [16], "horizon": 4, "starts": 16}}"#,
        runs.path(),
    );
    let run_arg = run.to_str().expect("utf-8");
    let scratch = tempfile::tempdir().expect("temp dir");
    let reference = scratch.path().join("reference.json");
    let args = [
        "export",
        "--run",
        run_arg,
        "--format",
        "safetensors",
        "--reference",
        reference.to_str().expect("utf-8"),
        "--reference-rows",
        "5",
    ];
    let output = wm(&args);
    assert!(output.status.success(), "wm export: {}", stderr(&output));
    let text = stdout(&output);
    // TINY_MLP: one hidden layer of 16; x = [s_n (4), one-hot a (2)], latent 4.
    for line in [
        "model.decoder.layers.0.weight [16, 10]",
        "model.decoder.layers.1.weight [10, 16]",
        "model.prior.layers.0.weight [16, 6]",
        "actor.net.layers.0.weight [16, 4]",
        "actor.net.layers.1.weight [2, 16]",
        "normalizer.obs_mean [4]",
        "normalizer.reward_std [1]",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    // The safetensors header: its length, then JSON with the metadata.
    let file = std::fs::read(run.join("export.safetensors")).expect("the default output");
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).expect("JSON header");
    let meta = &header["__metadata__"];
    assert_eq!(meta["model_kind"], "cvae", "{meta}");
    assert_eq!(meta["env"], "cartpole", "{meta}");
    assert_eq!(meta["worldmodel_format"], "1", "{meta}");
    assert_eq!(
        header["model.decoder.layers.0.weight"]["shape"],
        serde_json::json!([16, 10])
    );
    assert_eq!(header["model.decoder.layers.0.weight"]["dtype"], "F32");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&reference).expect("reference"))
            .expect("json");
    for (name, width) in [
        ("prior_mean", 4),
        ("mean_next_obs", 4),
        ("actor_log_probs", 2),
    ] {
        let rows = reference["outputs"][name].as_array().expect(name);
        assert_eq!(rows.len(), 5, "{name}");
        assert_eq!(rows[0].as_array().expect("a row").len(), width, "{name}");
    }
    assert_eq!(
        reference["outputs"]["mean_reward"]
            .as_array()
            .expect("rewards")
            .len(),
        5
    );

    // A second export would overwrite: refused, the first file kept.
    let again = wm(&["export", "--run", run_arg, "--format", "safetensors"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("the file exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read(run.join("export.safetensors")).expect("kept"),
        file
    );
    for (args, want) in [
        (
            vec![
                "export",
                "--run",
                "no/such/run",
                "--format",
                "safetensors",
                "--out",
                "x.st",
            ],
            "no such run folder",
        ),
        (
            vec![
                "export",
                "--run",
                run_arg,
                "--format",
                "safetensors",
                "--out",
                "y.st",
                "--reference",
                "r.json",
                "--reference-rows",
                "0",
            ],
            "--reference-rows must be between 1 and",
        ),
    ] {
        let output = wm(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains(want),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!std::path::Path::new("y.st").exists() && !std::path::Path::new("x.st").exists());
    }
}
