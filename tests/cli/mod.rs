//! `wm` as a user runs it: output formats, errors and exit codes.

mod device;
mod env;
mod faults;
#[cfg(feature = "tch")]
mod tch;
mod train;
