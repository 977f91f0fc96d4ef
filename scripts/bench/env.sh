#!/usr/bin/env bash
# Environment step throughput: worldmodel (Rust) against Gymnasium (Python) on this machine, in one
# run, printed as a Markdown table for BENCHMARKS.md. Sets up the Python venv if needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-python.sh >/dev/null
cargo build --release --locked --bin wm 2>/dev/null
RUST_STEPS=${RUST_STEPS:-2000000}
PY_STEPS=${PY_STEPS:-200000}
echo "| env | implementation | steps/s | ns/step |"
echo "|---|---|---:|---:|"
for pair in "cartpole CartPole-v1" "pendulum Pendulum-v1"; do
  set -- $pair
  rust=$(target/release/wm bench env --env "$1" --steps "$RUST_STEPS" --json)
  python=$(.venv/bin/python scripts/bench/env_gymnasium.py --env "$2" --steps "$PY_STEPS")
  for row in "$rust|worldmodel (Rust)" "$python|Gymnasium $(.venv/bin/python -c 'import gymnasium; print(gymnasium.__version__)') (Python)"; do
    json=${row%%|*}; name=${row#*|}
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"| {r['env']} | {sys.argv[2]} | {r['median_steps_per_s']:,.0f} | {r['median_ns_per_step']:,.0f} |\")" "$json" "$name"
  done
done
