#!/usr/bin/env python3
"""The RSSM update of worldmodel (crates/rssm) in JAX with `jit`, the twin of
scripts/bench/rssm_torch.py (same architecture, sizes, loss, data and read-back; see that file's
docstring). The time loop is a `jax.lax.scan`, as DreamerV3 writes it, and the whole update
(loss, gradient, clipping, Adam) is one jitted function. Categorical samples are drawn on the
device inside the update (straight-through one-hot with 1% unimix).

Threads: `--threads N` pins the process to N cores (sched_setaffinity) and, for N = 1, turns off
XLA's multi-threaded Eigen before JAX is imported.

Usage: python scripts/bench/rssm_jax.py --threads 2 --latent gaussian|categorical|both
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
    parser.add_argument("--latent", default="both", choices=["gaussian", "categorical", "both"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    sg = jax.lax.stop_gradient
    deter, hidden, free, obs_dim, act_dim = 200, 200, 1.0, 3, 1

    def linear_init(key, fan_in, fan_out, bias=True):
        bound = 1.0 / math.sqrt(fan_in)
        kw, kb = jax.random.split(key)
        w = jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound)
        b = jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound) if bias else None
        return (w, b)

    def linear(p, x):
        w, b = p
        return x @ w if b is None else x @ w + b

    def mlp_init(key, inp, widths, out):
        sizes = [inp] + widths + [out]
        keys = jax.random.split(key, len(sizes) - 1)
        return [linear_init(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def mlp(params, x):
        for p in params[:-1]:
            x = jax.nn.silu(linear(p, x))
        return linear(params[-1], x)

    def symlog(x):
        return jnp.sign(x) * jnp.log1p(jnp.abs(x))

    def run(kind):
        if kind == "gaussian":
            stoch, stats = 30, 60
        else:
            groups, classes, unimix = 32, 32, 0.01
            stoch = stats = groups * classes
        keys = iter(jax.random.split(jax.random.PRNGKey(0), 16))
        gru = linear_init(next(keys), hidden + deter, 3 * deter)
        gru = (gru[0], gru[1].at[2 * deter:].add(-1.0))
        params = {
            "encoder": mlp_init(next(keys), obs_dim, [200], 200),
            "img_in_z": linear_init(next(keys), stoch, hidden, bias=False),
            "img_in_a": linear_init(next(keys), act_dim, hidden),
            "gru": gru,
            "prior_hidden": linear_init(next(keys), deter, hidden),
            "prior_stats": linear_init(next(keys), hidden, stats),
            "post_h": linear_init(next(keys), deter, hidden, bias=False),
            "post_e": linear_init(next(keys), 200, hidden),
            "post_stats": linear_init(next(keys), hidden, stats),
            "decoder": mlp_init(next(keys), deter + stoch, [200, 200], obs_dim),
            "reward": mlp_init(next(keys), deter + stoch, [200, 200], 1),
            "cont": mlp_init(next(keys), deter + stoch, [200, 200], 1),
        }

        def dist(s):
            if kind == "gaussian":
                mean, raw = jnp.split(s, 2, -1)
                return (mean, jax.nn.softplus(raw) + 0.1)
            shape = s.shape[:-1] + (groups, classes)
            probs = jax.nn.softmax(s.reshape(shape), -1) * (1 - unimix) + unimix / classes
            return (probs.reshape(s.shape),)

        def sample(d, key):
            if kind == "gaussian":
                mean, std = d
                return mean + std * jax.random.normal(key, mean.shape, jnp.float32)
            (probs,) = d
            p = probs.reshape(probs.shape[0], groups, classes)
            idx = jax.random.categorical(key, jnp.log(sg(p)), axis=-1)
            one_hot = jax.nn.one_hot(idx, classes, dtype=jnp.float32)
            return (one_hot + p - sg(p)).reshape(probs.shape)

        def kl(q, p):
            if kind == "gaussian":
                (mq, sq), (mp, sp) = q, p
                return (jnp.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5).sum(-1)
            (pq,), (pp,) = q, p
            return (pq * (jnp.log(pq) - jnp.log(pp))).sum(-1)

        def spread(d):
            return d[1].mean() if kind == "gaussian" else -(d[0] * jnp.log(d[0])).sum(-1).mean()

        def gru_step(gru, x, h):
            parts = linear(gru, jnp.concatenate([x, h], -1))
            reset = jax.nn.sigmoid(parts[:, :deter])
            cand = jnp.tanh(reset * parts[:, deter:2 * deter])
            update = jax.nn.sigmoid(parts[:, 2 * deter:])
            return h + update * (cand - h)

        def loss_fn(params, key, obs, act, rew, first, term):
            b, t, _ = obs.shape
            obs, act = obs.transpose(1, 0, 2), act.transpose(1, 0, 2)
            rew, first, term = rew.T, first.T, term.T
            keep = (1 - first)[..., None]
            act = act / 2.0 * keep
            embed_proj = linear(params["post_e"], jax.nn.silu(mlp(params["encoder"], symlog(obs))))
            act_proj = linear(params["img_in_a"], act)

            def step(carry, inp):
                h, z = carry
                k, e, a, key = inp
                h, z = h * k, z * k
                h = gru_step(params["gru"], jax.nn.silu(linear(params["img_in_z"], z) + a), h)
                post = dist(linear(params["post_stats"], jax.nn.silu(linear(params["post_h"], h) + e)))
                z = sample(post, key)
                return (h, z), (h, z, post)

            # keep[0] multiplies the zero initial state: the same as skipping the reset at i = 0.
            step_keys = jax.random.split(key, t)
            init = (jnp.zeros((b, deter), jnp.float32), jnp.zeros((b, stoch), jnp.float32))
            _, (hs, zs, posts) = jax.lax.scan(step, init, (keep, embed_proj, act_proj, step_keys))
            n = b * t
            h_all, z_all = hs.reshape(n, deter), zs.reshape(n, stoch)
            post = tuple(x.reshape(n, -1) for x in posts)
            prior = dist(linear(params["prior_stats"], jax.nn.silu(linear(params["prior_hidden"], h_all))))
            feat = jnp.concatenate([h_all, z_all], -1)
            obs_err = (mlp(params["decoder"], feat) - symlog(obs.reshape(n, -1))) ** 2
            recon = 0.5 * obs_err.sum(-1).mean()
            reward = 0.5 * ((mlp(params["reward"], feat).reshape(n) - symlog(rew.reshape(n))) ** 2).mean()
            cont = optax.sigmoid_binary_cross_entropy(mlp(params["cont"], feat).reshape(n), 1 - term.reshape(n)).mean()
            sgd = lambda d: tuple(sg(x) for x in d)
            kl_dyn = kl(sgd(post), prior)
            dyn = jnp.maximum(kl_dyn, free).mean()
            rep = jnp.maximum(kl(post, sgd(prior)), free).mean()
            total = recon + reward + cont + 0.5 * dyn + 0.1 * rep
            metrics = sg(jnp.stack([kl_dyn.mean(), spread(sgd(post)), spread(sgd(prior)), obs_err.mean()]))
            return total, metrics

        optimizer = optax.chain(optax.clip_by_global_norm(100.0), optax.adam(3e-4, eps=1e-8))
        opt_state = optimizer.init(params)

        @jax.jit
        def update(params, opt_state, key, obs, act, rew, first, term):
            key, sub = jax.random.split(key)
            (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, sub, obs, act, rew, first, term)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, key, loss, metrics

        b, t = args.batch, args.seq_len
        rng = np.random.default_rng(0)
        key = jax.random.PRNGKey(1)
        times = []
        for step in range(args.warmup + args.steps):
            th = rng.uniform(0, 2 * np.pi, size=(b, t))
            obs_np = np.stack([np.cos(th), np.sin(th), rng.uniform(-8, 8, size=(b, t))], -1).astype(np.float32)
            act_np = rng.uniform(-2, 2, size=(b, t, 1)).astype(np.float32)
            rew_np = -rng.uniform(0, 16, size=(b, t)).astype(np.float32)
            first_np = np.zeros((b, t), dtype=np.float32)
            first_np[:, 0] = 1
            term_np = np.zeros((b, t), dtype=np.float32)
            start = time.perf_counter()
            batch = map(jnp.asarray, (obs_np, act_np, rew_np, first_np, term_np))
            params, opt_state, key, loss, metrics = update(params, opt_state, key, *batch)
            np.asarray(metrics).tolist()
            float(loss)
            if step >= args.warmup:
                times.append((time.perf_counter() - start) * 1e3)
        if not math.isfinite(float(loss)):
            sys.exit(f"non-finite loss {float(loss)}")
        times.sort()
        q = lambda p: times[round((len(times) - 1) * p)]
        print(json.dumps({
            "implementation": f"JAX {jax.__version__} (jit)", "model": f"rssm_{kind}",
            "threads": threads, "batch": b, "seq_len": t, "deter": deter,
            "median_ms": round(q(0.5), 2), "p10_ms": round(q(0.1), 2), "p90_ms": round(q(0.9), 2),
            "updates_per_s": round(1e3 / q(0.5), 2),
        }))

    kinds = ["gaussian", "categorical"] if args.latent == "both" else [args.latent]
    for kind in kinds:
        run(kind)


if __name__ == "__main__":
    main()
