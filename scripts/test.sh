#!/usr/bin/env bash
# The tests, exactly as CI runs them (.ci/run; the README's "Tests" section):
#   (a) `cargo fmt --check`, `cargo clippy -D warnings`, then the whole workspace on flex,
#       burn's pure-Rust CPU backend (the default build);
#   (b) the libtorch backend (`--features tch`): clippy with the feature, the model crates' tests again with their tensors
#       on libtorch (WM_TEST_DEVICE=tch-cpu), the cross-backend checkpoint tests and
#       `wm train --device tch-cpu`. It first installs PyTorch 2.9.0 from PyPI into .venv
#       (scripts/setup-libtorch.sh: about 7 GB, skipped when already installed).
# WM_SKIP_TCH=1 skips (b) for a quick local run; CI always runs both.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
echo "== (a) cargo fmt --check"
cargo fmt --all --check
echo "== (a) cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The closed-loop learning test (a learned Pendulum model with CEM must beat random actions;
# about a minute on 2 cores) fits CI's budget, so it runs here.
export WM_LEARNING_TESTS="${WM_LEARNING_TESTS:-1}"
echo "== (a) flex: cargo test --release --workspace --locked"
cargo test --release --workspace --locked
echo "== (a) done in $((SECONDS - started)) s"

if [[ "${WM_SKIP_TCH:-0}" == 1 ]]; then
    echo "== (b) libtorch: skipped (WM_SKIP_TCH=1)"
    exit 0
fi

echo "== (b) libtorch: scripts/setup-libtorch.sh"
eval "$(bash scripts/setup-libtorch.sh --print-env)"
export WM_TEST_DEVICE=tch-cpu
# One OpenMP thread per libtorch operation: the tests already run in parallel, and OpenMP
# threads spinning against each other made the model tests 5x to 200x slower on 2 cores.
export OMP_NUM_THREADS=1
echo "== (b) libtorch: cargo clippy --features tch (warnings are errors)"
cargo clippy --release --workspace --all-targets --locked --features tch -- -D warnings
echo "== (b) libtorch: model crates on tch-cpu, cross-backend checkpoints"
# --lib --tests: the unit and integration tests (the doc examples ran in (a), on flex).
cargo test --release --locked --features tch --lib --tests \
    -p wm-backend -p wm-models -p wm-rssm -p wm-imagine -p wm-plan -p wm-agent -p wm-train
echo "== (b) libtorch: wm train / eval / device with --device tch-cpu"
cargo test --release --locked --features tch -p worldmodel --test tests -- cli::tch:: cli::device::
echo "== all tests passed in $((SECONDS - started)) s"
