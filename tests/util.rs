//! Helpers shared by the integration tests.

use std::process::{Command, Output};

/// Runs the `wm` binary with `args` and returns its output (never panics on a non-zero exit).
pub fn wm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wm"))
        .args(args)
        .output()
        .expect("the wm binary should start")
}

/// The output's stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout should be UTF-8")
}

/// The output's stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr should be UTF-8")
}

/// Runs the `wm` binary in the folder `dir`.
pub fn wm_in(dir: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wm"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the wm binary should start")
}
