#!/usr/bin/env bash
# The libtorch of the `tch` cargo feature (`--device tch-cpu`, `cuda[:N]`): PyTorch 2.9.0 from
# PyPI in the project-local .venv (scripts/setup-python.sh --torch; about 7 GB with its CUDA
# libraries, idempotent), and the environment that building and running with it need:
#
#   LIBTORCH_USE_PYTORCH=1     torch-sys finds libtorch through the venv's python
#   PATH=.venv/bin:...         ... which must be the first python on PATH when cargo builds
#   LD_LIBRARY_PATH=<torch>/lib   the shared libraries, when the binaries and tests run
#
# Usage:
#   scripts/setup-libtorch.sh               install, then print the environment to export
#   eval "$(scripts/setup-libtorch.sh --print-env)"   install, then set it in this shell
#   cargo build --release --features tch && target/release/wm train --device tch-cpu ...
# Everything but the `export` lines of --print-env goes to stderr.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
# The libtorch version that tch 0.22 (burn-tch 0.22) is built against.
expected="2.9.0"

case "${1:-}" in
    "" | --print-env) ;;
    *) echo "usage: $0 [--print-env]" >&2; exit 2 ;;
esac

bash "$repo_root/scripts/setup-python.sh" --torch

torch_lib="$("$venv/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
version="$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
if [[ "$version" != "$expected" ]]; then
    echo "error: $venv has torch $version; the tch feature needs $expected (scripts/bench/requirements.txt)" >&2
    exit 1
fi
if [[ ! -e "$torch_lib/libtorch_cpu.so" ]]; then
    echo "error: no libtorch_cpu.so in $torch_lib" >&2
    exit 1
fi

env_lines="export LIBTORCH_USE_PYTORCH=1
export PATH=\"$venv/bin:\$PATH\"
export LD_LIBRARY_PATH=\"$torch_lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""

if [[ "${1:-}" == "--print-env" ]]; then
    echo "$env_lines"
else
    echo "libtorch $version is in $torch_lib. To build and run with it, export:" >&2
    echo "$env_lines"
fi
