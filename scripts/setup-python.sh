#!/usr/bin/env bash
# Creates the project-local Python venv (.venv, git-ignored) used to generate and
# check the Gymnasium golden trajectories. Idempotent: does nothing when the pinned
# requirements are already installed.
#
# Usage: scripts/setup-python.sh          (then: .venv/bin/python scripts/goldens/generate.py)
#        scripts/setup-python.sh --bench  (also PyTorch for scripts/bench/*.sh; about 7 GB)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
requirements="$repo_root/scripts/goldens/requirements.txt"
if [[ "${1:-}" == "--bench" ]]; then
    combined="$(mktemp)"
    cat "$requirements" "$repo_root/scripts/bench/requirements.txt" >"$combined"
    requirements="$combined"
fi
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating venv at $venv"
    "$python" -m venv "$venv"
fi

# `pip freeze` lists exact pins; skip the install when every pinned line is already present.
missing=0
installed="$("$venv/bin/python" -m pip freeze 2>/dev/null || true)"
while IFS= read -r line; do
    line="${line%%#*}"
    line="$(echo "$line" | tr -d '[:space:]')"
    [[ -z "$line" ]] && continue
    if ! grep -qixF "$line" <<<"$installed"; then
        missing=1
    fi
done <"$requirements"

if [[ "$missing" == 0 ]]; then
    echo "python requirements already installed in $venv"
    exit 0
fi

"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$requirements"
echo "installed $(tr '\n' ' ' < <(grep -v '^#' "$requirements")) into $venv"
