//! `--device`: a device the build or the machine lacks is a one-line error, before anything is
//! written.

use crate::cli::train::{TINY, config_path};
use crate::util::{stderr, stdout, wm};

#[test]
fn a_missing_device_is_a_one_line_error_and_no_run_folder_is_created() {
    let runs = tempfile::tempdir().expect("temp dir");
    let config = config_path("cartpole_cvae.ron");
    let mut args = vec![
        "train",
        "--config",
        &config,
        "--runs-dir",
        runs.path().to_str().expect("utf-8"),
    ];
    args.extend_from_slice(TINY);
    // No machine has 4097 GPUs; without the tch feature no build has any.
    args.extend_from_slice(&["--device", "cuda:4096", "--quiet"]);
    let output = wm(&args);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("error: device `cuda:4096`") && !message.contains("panicked"),
        "{message}"
    );
    let expected = if cfg!(feature = "tch") {
        "not available on this machine"
    } else {
        "needs the `tch` cargo feature"
    };
    assert!(message.contains(expected), "{message}");
    assert_eq!(
        std::fs::read_dir(runs.path()).expect("runs dir").count(),
        0,
        "nothing is written for a missing device"
    );
}

#[test]
fn an_unknown_device_is_a_one_line_error_for_every_command() {
    for args in [
        vec![
            "train",
            "--config",
            "configs/cartpole_cvae.ron",
            "--device",
            "gpu",
        ],
        vec!["eval", "--run", "no-such-run", "--device", "gpu"],
        vec!["plot", "--run", "no-such-run", "--device", "gpu"],
        vec!["device", "--device", "gpu"],
    ] {
        let output = wm(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let message = stderr(&output);
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(
            message.contains("unknown device `gpu`"),
            "{args:?}: {message}"
        );
    }
}

#[test]
fn wm_device_lists_the_devices_of_this_build() {
    let output = wm(&["device", "--device", "cpu"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = if cfg!(feature = "tch") {
        "devices in this build: cpu, tch-cpu, cuda[:N]"
    } else {
        "devices in this build: cpu\n"
    };
    assert!(stdout(&output).contains(expected), "{}", stdout(&output));
}
