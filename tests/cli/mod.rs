//! `wm` as a user runs it: output formats, errors and exit codes.

mod bench_acting;
mod device;
mod env;
#[cfg(feature = "tch")]
mod tch;
mod train;
