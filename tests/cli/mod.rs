//! `wm` as a user runs it: output formats, errors and exit codes.

mod env;
mod train;
