#!/usr/bin/env bash
# The tests, exactly as CI runs them (.ci/run; the README's "Tests" section).
#
# One release build serves every part: the workspace is built once with `--features tch`, which
# adds the libtorch backend beside flex (features are additive: flex, the default device, is in
# every build), so the flex tests and the libtorch tests share one compilation of burn instead of
# two. It first installs PyTorch 2.9.0 from PyPI into .venv (scripts/setup-libtorch.sh: about
# 7 GB, skipped when already installed).
#   (a) `cargo fmt --check`, `cargo clippy -D warnings` (with the tch feature: it checks the flex
#       code too), then every test of the workspace with the tensors on flex
#       (WM_TEST_DEVICE unset), the learning tests included (WM_LEARNING_TESTS=1), and with it
#       the tch-gated tests: `wm train --device tch-cpu` for every model (tests/cli/tch.rs) and
#       the cross-backend checkpoint tests (crates/train/tests/cross_backend.rs);
#   (b) the unit and integration tests of the library crates again with their tensors on
#       libtorch (WM_TEST_DEVICE=tch-cpu), from the same build.
# WM_SKIP_TCH=1 builds without the tch feature and runs (a) only (no PyTorch needed): a quick
# local check. CI always runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
echo "== cargo fmt --check"
cargo fmt --all --check

# The learning tests (a learned Pendulum model with CEM must beat random actions; the categorical
# RSSM must predict Pendulum under a floor; a few minutes on 2 cores) fit CI's budget.
export WM_LEARNING_TESTS="${WM_LEARNING_TESTS:-1}"

if [[ "${WM_SKIP_TCH:-0}" == 1 ]]; then
    echo "== cargo clippy (warnings are errors); libtorch skipped (WM_SKIP_TCH=1)"
    cargo clippy --workspace --all-targets --locked -- -D warnings
    echo "== (a) flex: cargo test --release --workspace --locked"
    cargo test --release --workspace --locked
    echo "== SKIPPED: scripts/bench/export_torch.py --test (needs the .venv with PyTorch; WM_SKIP_TCH=1)"
    echo "== (a) done in $((SECONDS - started)) s; (b) libtorch skipped (WM_SKIP_TCH=1)"
    exit 0
fi

echo "== libtorch: scripts/setup-libtorch.sh"
eval "$(bash scripts/setup-libtorch.sh --print-env)"
# One OpenMP thread per libtorch operation: the tests already run in parallel, and OpenMP
# threads spinning against each other made the model tests 5x to 200x slower on 2 cores.
export OMP_NUM_THREADS=1
features=(--release --workspace --locked --features tch)

echo "== cargo clippy --features tch (warnings are errors)"
cargo clippy "${features[@]}" --all-targets -- -D warnings
echo "== (a) every test, tensors on flex: cargo test --features tch"
cargo test "${features[@]}"
echo "== (a) done in $((SECONDS - started)) s"

# `cargo test` built target/release/wm (the integration tests run it). The PyTorch twins load a
# `wm export` file and must predict what Rust does within 1e-5 (trains two tiny runs first).
echo "== the safetensors export in PyTorch: scripts/bench/export_torch.py --test"
.venv/bin/python scripts/bench/export_torch.py --test --wm target/release/wm

echo "== (b) the library crates' tests again with tensors on libtorch (WM_TEST_DEVICE=tch-cpu)"
# --lib --tests: unit and integration tests (the doc examples ran in (a)). The CLI tests
# (the root package's `cli::` tests, which choose their device by flag) ran in (a), so they are
# skipped here (the learning tests are among them).
WM_TEST_DEVICE=tch-cpu cargo test "${features[@]}" --lib --tests -- --skip cli::
echo "== all tests passed in $((SECONDS - started)) s"
