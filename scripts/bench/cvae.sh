#!/usr/bin/env bash
# cVAE update time: worldmodel (burn, flex CPU backend) against the same model in PyTorch, on this
# machine, in one run, at 1 and 2 threads; prints a Markdown table for BENCHMARKS.md.
# Installs the PyTorch it compares with into .venv (scripts/setup-python.sh --bench).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-python.sh --bench >/dev/null
cargo build --release --locked --bin wm 2>/dev/null
STEPS=${STEPS:-300}
echo "| implementation | threads | batch | hidden | median ms/update | p10 | p90 | updates/s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for threads in 1 2; do
  rust=$(RAYON_NUM_THREADS=$threads target/release/wm bench update --model cvae --steps "$STEPS" --json)
  torch=$(.venv/bin/python scripts/bench/cvae_torch.py --threads "$threads" --steps "$STEPS")
  for json in "$rust" "$torch"; do
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"| {r['implementation']} | {r['threads']} | {r['batch']} | 2x{r['hidden']} | {r['median_ms']:.2f} | {r['p10_ms']:.2f} | {r['p90_ms']:.2f} | {r['updates_per_s']:.0f} |\")" "$json"
  done
done
