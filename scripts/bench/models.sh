#!/usr/bin/env bash
# Update time of every model: worldmodel (burn, flex CPU backend) against the same models in
# PyTorch, on this machine, in one run, at 1 and 2 threads; prints a Markdown table for
# BENCHMARKS.md. Installs the PyTorch it compares with into .venv (scripts/setup-python.sh --bench).
#   cVAE: batch 256, two hidden layers of 256 (CartPole data)
#   RSSM: batch 16 x 50, deter 200, hidden 200, Gaussian 30 or categorical 32x32 (Pendulum data)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-python.sh --bench >/dev/null
cargo build --release --locked --bin wm 2>/dev/null
CVAE_STEPS=${CVAE_STEPS:-300}
RSSM_STEPS=${RSSM_STEPS:-30}
row() {
  python3 -c "import json,sys; r=json.loads(sys.argv[1]); b=f\"{r['batch']}x{r['seq_len']}\" if r.get('seq_len') else str(r['batch']); print(f\"| {r['model']} | {r['implementation']} | {r['threads']} | {b} | {r['median_ms']:.2f} | {r['p10_ms']:.2f} | {r['p90_ms']:.2f} | {r['updates_per_s']:.1f} |\")" "$1"
}
echo "| model | implementation | threads | batch | median ms/update | p10 | p90 | updates/s |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for threads in 1 2; do
  row "$(RAYON_NUM_THREADS=$threads target/release/wm bench update --model cvae --steps "$CVAE_STEPS" --json)"
  row "$(.venv/bin/python scripts/bench/cvae_torch.py --threads "$threads" --steps "$CVAE_STEPS")"
  for latent in gaussian categorical; do
    row "$(RAYON_NUM_THREADS=$threads target/release/wm bench update --model rssm_$latent --batch 16 --seq-len 50 --hidden 200 --warmup 5 --steps "$RSSM_STEPS" --json)"
    row "$(.venv/bin/python scripts/bench/rssm_torch.py --threads "$threads" --latent $latent --steps "$RSSM_STEPS")"
  done
done
