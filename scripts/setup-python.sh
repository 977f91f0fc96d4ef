#!/usr/bin/env bash
# Creates the project-local Python venv (.venv, git-ignored) used to generate and
# check the Gymnasium golden trajectories. Idempotent: does nothing when the pinned
# requirements are already installed.
#
# Usage: scripts/setup-python.sh          (then: .venv/bin/python scripts/goldens/generate.py)
#        scripts/setup-python.sh --bench  (also PyTorch and JAX for scripts/bench/*.sh; about 7 GB)
#        scripts/setup-python.sh --torch  (PyTorch only: the libtorch of the `tch` feature,
#                                          used by scripts/setup-libtorch.sh)
# Messages go to stderr, so that callers can keep stdout for themselves.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
goldens="$repo_root/scripts/goldens/requirements.txt"
torch="$repo_root/scripts/bench/requirements.txt"
jax="$repo_root/scripts/bench/requirements-jax.txt"
case "${1:-}" in
    "") requirement_files=("$goldens") ;;
    --bench) requirement_files=("$goldens" "$torch" "$jax") ;;
    --torch) requirement_files=("$torch") ;;
    *) echo "usage: $0 [--bench | --torch]" >&2; exit 2 ;;
esac
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    # Debian and Ubuntu ship `venv` without ensurepip unless python3-venv is installed.
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        echo "python3 -m venv is unavailable; installing Debian's python3-venv" >&2
        sudo_cmd=()
        [[ "$(id -u)" != 0 ]] && sudo_cmd=(sudo)
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    fi
    echo "creating venv at $venv" >&2
    "$python" -m venv "$venv"
fi

# Skip the install when every `name==version` pin is already installed at that version (read
# from the installed metadata, so a wheel installed from a file counts too).
if "$venv/bin/python" - "${requirement_files[@]}" <<'EOF'
import importlib.metadata, sys
for path in sys.argv[1:]:
    for line in open(path):
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        try:
            if importlib.metadata.version(name) != version:
                sys.exit(1)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(1)
EOF
then
    echo "python requirements already installed in $venv" >&2
    exit 0
fi

"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
for file in "${requirement_files[@]}"; do
    "$venv/bin/python" -m pip install --quiet -r "$file" >&2
    echo "installed $(grep -v '^#' "$file" | tr '\n' ' ')into $venv" >&2
done
