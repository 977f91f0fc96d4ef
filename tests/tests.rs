//! The integration tests: one binary with a module per area (ripgrep's layout).
//! They run the real `wm` binary built by cargo for this test run.

mod cli;
mod util;
