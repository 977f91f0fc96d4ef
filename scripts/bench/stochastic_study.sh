#!/usr/bin/env bash
# The stochastic-dynamics study (issue 15): every one-step model on the stochastic environments,
# trained with the same data and update budget, then scored by the built-in evaluation against
# the held-out episodes and, at the same (s, a), against the true transition law (`wm eval`'s
# MMD², energy distance and mode coverage). Prints a Markdown table for BENCHMARKS.md.
#
#   ENVS="bimodal_walk kicked_pendulum" MODELS="cvae gaussian ensemble deterministic" \
#   UPDATES=3000 SEEDS="0" bash scripts/bench/stochastic_study.sh
#
# The cVAE uses each environment's shipped config (configs/{env}_cvae.ron); the other models use
# the Pendulum configs of their kind with `env` overridden (same data sizes: 5,000 prefill steps,
# 4,000 held-out steps). Run folders go to $RUNS (default: a temporary folder, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
ENVS=${ENVS:-bimodal_walk kicked_pendulum wet_chicken gusty_cartpole}
MODELS=${MODELS:-cvae gaussian ensemble deterministic}
UPDATES=${UPDATES:-3000}
SEEDS=${SEEDS:-0}
wm="${CARGO_TARGET_DIR:-target}/release/wm"
[[ -x $wm ]] || cargo build --release --locked --workspace >&2
runs=${RUNS:-$(mktemp -d)}
[[ -n ${RUNS:-} ]] || trap 'rm -rf "$runs"' EXIT

config_of() {
  case $2 in
    cvae) echo "configs/$1_cvae.ron" ;;
    gaussian) echo configs/pendulum_gaussian_mlp.ron ;;
    ensemble) echo configs/pendulum_ensemble.ron ;;
    deterministic) echo configs/pendulum_deterministic_mlp.ron ;;
    *) echo "unknown model $2" >&2; exit 2 ;;
  esac
}

echo "| env | model | seed | NLL nats/dim (estimator) | ES h=1 | ES h=10 | MMD² h=1 | energy distance h=1 | mode coverage (truth's own) | samples near no mode (truth's own) | one-step RMSE | wall s |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for env in $ENVS; do
  for model in $MODELS; do
    for seed in $SEEDS; do
      dir="$runs/$env-$model-$seed"
      mkdir -p "$dir"
      start=$SECONDS
      "$wm" train --config "$(config_of "$env" "$model")" --set "env=$env" --seed "$seed" \
        --set "schedule.updates=$UPDATES" --set "schedule.eval_every=$UPDATES" \
        --set "schedule.checkpoint_every=$UPDATES" --set 'eval.iwae_samples=[1, 64]' \
        --set eval.policy_episodes=0 --runs-dir "$dir" --quiet >"$dir/log" 2>&1 \
        || { echo "| $env | $model | $seed | failed: see $dir/log | | | | | | | | |"; continue; }
      wall=$((SECONDS - start))
      python3 - "$dir" "$env" "$model" "$seed" "$wall" <<'EOF'
import glob, json, math, sys
d, env, model, seed, wall = sys.argv[1:]
r = json.load(open(glob.glob(f"{d}/*/eval.json")[0]))
nll = [e for e in r["nll"] if e["estimator"] != "sequence_iwae"]
best = max(nll, key=lambda e: e["k"]) if nll else None
nll_s = f"{best['nats_per_dim']:.3f} ({best['estimator']} k={best['k']})" if best else "-"
f = lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"
es1 = (r.get("energy_score") or {}).get("mean")
es10 = (r.get("energy_score_long") or {}).get("mean")
t = r.get("truth") or {}
cov = f"{f(t.get('mode_coverage'))} ({f(t.get('truth_mode_coverage'))})" if t else "-"
out = f"{f(t.get('outside_fraction'))} ({f(t.get('truth_outside_fraction'))})" if t else "-"
dims = r["one_step_rmse_per_dim"]
rmse = math.sqrt(sum(v * v for v in dims) / max(len(dims), 1))
print(f"| {env} | {model} | {seed} | {nll_s} | {f(es1)} | {f(es10)} | {f(t.get('mmd2'))} | "
      f"{f(t.get('energy_distance'))} | {cov} | {out} | {rmse:.4f} | {wall} |")
EOF
    done
  done
done
