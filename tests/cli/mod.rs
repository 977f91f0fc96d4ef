//! `wm` as a user runs it: output formats, errors and exit codes.

mod bench_acting;
mod bench_estimators;
mod config_errors;
mod config_walk;
mod device;
mod ensemble;
mod env;
mod export;
mod faults;
mod nonfinite;
mod play;
mod resume;
mod rssm_learning;
#[cfg(feature = "tch")]
mod tch;
mod train;
