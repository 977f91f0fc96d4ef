#!/usr/bin/env python3
"""The cVAE update of worldmodel (crates/models/src/cvae.rs) in JAX with `jit`, timed like
`wm bench update` and scripts/bench/cvae_torch.py (the PyTorch twin; same architecture, loss,
initialisation scheme, data and read-back).

x = [s_n, one-hot a]; posterior MLP [x, d_n] -> 2L; learned prior MLP x -> 2L; decoder MLP
[x, z] -> [delta mean (O) | raw log-std (O) | reward | termination logit]; SiLU hidden layers;
log-stds softly bounded by tanh; KL with free bits on the posterior side and the prior trained on
KL(sg(q) || p); reward Gaussian NLL with a scalar log-std; termination BCE; six diagnostics read
back per step; Adam with global-norm clipping at 100 (optax). The whole update (loss, gradient,
clipping, Adam) is one jitted function, which is what JAX users run. The batch is sampled on the
host and copied in each step, as in Rust and PyTorch; the latent noise is drawn on the device
from a split key inside the jitted update.

Threads: `--threads N` pins the process to N cores (sched_setaffinity) and, for N = 1, turns off
XLA's multi-threaded Eigen before JAX is imported.

Usage: python scripts/bench/cvae_jax.py --threads 2 --batch 256 --hidden 256 --steps 200
"""
import argparse
import json
import math
import os
import sys
import time


def set_threads(threads):
    # Must run before `import jax`.
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = flags.strip()
    return len(cpus)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    ln_2pi = math.log(2 * math.pi)
    obs_dim, n_actions, latent, lo, hi, free = 4, 2, 4, -5.0, 2.0, 1.0

    def linear_init(key, fan_in, fan_out):
        # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
        bound = 1.0 / math.sqrt(fan_in)
        kw, kb = jax.random.split(key)
        return (jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
                jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound))

    def mlp_init(key, inp, hidden, out):
        widths = [inp] + hidden + [out]
        keys = jax.random.split(key, len(widths) - 1)
        return [linear_init(k, a, b) for k, a, b in zip(keys, widths[:-1], widths[1:])]

    def mlp(params, x):
        for w, b in params[:-1]:
            x = jax.nn.silu(x @ w + b)
        w, b = params[-1]
        return x @ w + b

    def soft_bound(raw):
        mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        offset = math.atanh(max(-0.999, min(0.999, -mid / half)))
        return jnp.tanh(raw + offset) * half + mid

    def kl_diag(qm, qs, pm, ps):
        return (ps - qs + (jnp.exp(2 * qs) + (qm - pm) ** 2) / (2 * jnp.exp(2 * ps)) - 0.5).sum(-1)

    sg = jax.lax.stop_gradient
    hidden = [args.hidden, args.hidden]
    x_dim = obs_dim + n_actions
    k_post, k_prior, k_dec, k_run = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "posterior": mlp_init(k_post, x_dim + obs_dim, hidden, 2 * latent),
        "prior": mlp_init(k_prior, x_dim, hidden, 2 * latent),
        "decoder": mlp_init(k_dec, x_dim + latent, hidden, 2 * obs_dim + 2),
        "reward_log_std": jnp.zeros((1,), jnp.float32),
    }

    def split(out):
        return out[:, :latent], soft_bound(out[:, latent:])

    def loss_fn(params, key, s_n, a, d_n, r_n, term):
        x = jnp.concatenate([s_n, jax.nn.one_hot(a, n_actions, dtype=jnp.float32)], 1)
        qm, qs = split(mlp(params["posterior"], jnp.concatenate([x, d_n], 1)))
        pm, ps = split(mlp(params["prior"], x))
        z = qm + jnp.exp(qs) * jax.random.normal(key, qm.shape, jnp.float32)
        h = mlp(params["decoder"], jnp.concatenate([x, z], 1))
        o = obs_dim
        mean, log_std = h[:, :o], soft_bound(h[:, o:2 * o])
        reward_mean, term_logit = h[:, 2 * o], h[:, 2 * o + 1]
        recon = -(-0.5 * ((d_n - mean) * jnp.exp(-log_std)) ** 2 - log_std - 0.5 * ln_2pi).sum(1).mean()
        kl_raw = sg(kl_diag(qm, qs, pm, ps)).mean()
        for_posterior = jnp.maximum(kl_diag(qm, qs, sg(pm), sg(ps)), free)
        for_prior = kl_diag(sg(qm), sg(qs), pm, ps)
        kl = (for_posterior + for_prior - sg(for_prior)).mean()
        rls = soft_bound(params["reward_log_std"])
        reward = (0.5 * ((r_n - reward_mean) * jnp.exp(-rls)) ** 2 + rls + 0.5 * ln_2pi).mean()
        termination = optax.sigmoid_binary_cross_entropy(term_logit, term).mean()
        metrics = sg(jnp.stack([kl_raw, jnp.exp(log_std).mean(), jnp.exp(qs).mean(), jnp.exp(rls)[0],
                                ((d_n - mean) ** 2).mean(), jnp.exp(ps).mean()]))
        return recon + kl + reward + termination, metrics

    optimizer = optax.chain(optax.clip_by_global_norm(100.0), optax.adam(1e-3, eps=1e-8))
    opt_state = optimizer.init(params)

    @jax.jit
    def update(params, opt_state, key, s, a, d, r, t):
        key, sub = jax.random.split(key)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, sub, s, a, d, r, t)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, loss, metrics

    rng = np.random.default_rng(0)
    n = 10_000  # the same host-side replay as cvae_torch.py
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    act = rng.integers(0, 2, size=n)
    nxt = (obs + 0.05 * rng.normal(size=(n, 4))).astype(np.float32)
    rew = np.ones(n, dtype=np.float32)
    ter = (rng.random(n) < 0.05).astype(np.float32)
    key = k_run
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        idx = rng.integers(0, n, size=args.batch)
        batch = (obs[idx], act[idx].astype(np.int32), nxt[idx] - obs[idx], rew[idx], ter[idx])
        params, opt_state, key, loss, metrics = update(params, opt_state, key, *map(jnp.asarray, batch))
        np.asarray(metrics)
        float(loss)
        if step >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    if not math.isfinite(float(loss)):
        sys.exit(f"non-finite loss {float(loss)}")
    times.sort()
    q = lambda p: times[round((len(times) - 1) * p)]
    print(json.dumps({
        "implementation": f"JAX {jax.__version__} (jit)", "model": "cvae", "device": "cpu",
        "threads": threads, "batch": args.batch, "hidden": args.hidden, "steps": args.steps,
        "median_ms": q(0.5), "p10_ms": q(0.1), "p90_ms": q(0.9), "updates_per_s": 1e3 / q(0.5),
    }))


if __name__ == "__main__":
    main()
