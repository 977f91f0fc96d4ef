#!/usr/bin/env bash
# Update time of every model: worldmodel (burn, flex CPU backend) against the same models in
# PyTorch and in JAX (jit), on this machine, in one run, at 1 and 2 threads; prints a Markdown
# table for BENCHMARKS.md. Installs the PyTorch and JAX it compares with into .venv
# (scripts/setup-python.sh --bench).
#   cVAE: batch 256, two hidden layers of 256 (CartPole data)
#   RSSM: batch 16 x 50, deter 200, hidden 200, Gaussian 30 or categorical 32x32 (Pendulum data)
# With --tch, `wm` is built with the `tch` feature and every model is also timed with burn on
# libtorch (`--device tch-cpu`, threads via OMP_NUM_THREADS); MODELS="cvae rssm_gaussian" picks
# the models, THREADS="1 2" the thread counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
tch=0
case "${1:-}" in
  "") ;;
  --tch) tch=1 ;;
  *) echo "usage: $0 [--tch]" >&2; exit 2 ;;
esac
bash scripts/setup-python.sh --bench >/dev/null 2>&1
if [[ $tch == 1 ]]; then
  eval "$(bash scripts/setup-libtorch.sh --print-env 2>/dev/null)"
  cargo build --release --locked --features tch --bin wm 2>/dev/null
else
  cargo build --release --locked --bin wm 2>/dev/null
fi
wm="${CARGO_TARGET_DIR:-target}/release/wm"
CVAE_STEPS=${CVAE_STEPS:-300}
RSSM_STEPS=${RSSM_STEPS:-30}
MODELS=${MODELS:-cvae rssm_gaussian rssm_categorical}
THREADS=${THREADS:-1 2}
devices="cpu"
[[ $tch == 1 ]] && devices="cpu tch-cpu"
row() {
  python3 -c "
import json, sys
r = json.loads(sys.argv[1])
b = f\"{r['batch']}x{r['seq_len']}\" if r.get('seq_len') else str(r['batch'])
impl = r['implementation']
if impl == 'worldmodel (burn)':
    impl = 'worldmodel (burn ' + ('flex' if r['device'] == 'cpu' else r['device']) + ')'
print(f\"| {r['model']} | {impl} | {r['threads']} | {b} | {r['median_ms']:.2f} | {r['p10_ms']:.2f} | {r['p90_ms']:.2f} | {r['updates_per_s']:.1f} |\")
" "$1"
}
echo "| model | implementation | threads | batch | median ms/update | p10 | p90 | updates/s |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for threads in $THREADS; do
  for model in $MODELS; do
    for device in $devices; do
      if [[ $model == cvae ]]; then
        args=(--model cvae --steps "$CVAE_STEPS")
      else
        args=(--model "$model" --batch 16 --seq-len 50 --hidden 200 --warmup 5 --steps "$RSSM_STEPS")
      fi
      row "$(RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads "$wm" bench update --device "$device" "${args[@]}" --json)"
    done
    if [[ $model == cvae ]]; then
      row "$(.venv/bin/python scripts/bench/cvae_torch.py --threads "$threads" --steps "$CVAE_STEPS")"
      row "$(.venv/bin/python scripts/bench/cvae_jax.py --threads "$threads" --steps "$CVAE_STEPS")"
    else
      row "$(.venv/bin/python scripts/bench/rssm_torch.py --threads "$threads" --latent "${model#rssm_}" --steps "$RSSM_STEPS")"
      row "$(.venv/bin/python scripts/bench/rssm_jax.py --threads "$threads" --latent "${model#rssm_}" --steps "$RSSM_STEPS")"
    fi
  done
done
