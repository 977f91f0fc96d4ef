#!/usr/bin/env python3
"""The RSSM update of worldmodel (crates/rssm) in PyTorch, timed like
`cargo run --release -p wm-rssm --example rssm_step_time`.

Same architecture, sizes and loss: encoder MLP on symlog(o) (SiLU after every layer, [200, 200]);
cell input SiLU(W_z z + W_a a + b) (hidden 200); DreamerV3 GRU with one fused gate matmul
[x, h] -> [reset | cand | update] (update bias initialised at -1); prior h -> 200 -> stats;
posterior [h, e] -> 200 -> stats; Gaussian latent (30, std = softplus + 0.1) or 32x32
categoricals (1% unimix, straight-through one-hot samples); zero initial state reset where
is_first; decoder / reward / continue MLPs [200, 200] on [h, z] over all B*T rows; losses:
0.5*symlog-MSE recon and reward, continue BCE, dyn = max(1, KL(sg(q)||p)), rep = max(1,
KL(q||sg(p))) per step with weights 0.5 / 0.1; four metrics read back per step; Adam with
global-norm clipping at 100. Batch 16 x 50, obs 3, action 1 (Pendulum-like random data),
copied from the host each step.

Usage: python scripts/bench/rssm_torch.py --threads 2 --latent gaussian|categorical|both
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(inp, hidden, out):
    layers, width = [], inp
    for h in hidden:
        layers += [nn.Linear(width, h), nn.SiLU()]
        width = h
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


def symlog(x):
    return torch.sign(x) * torch.log1p(x.abs())


class Rssm(nn.Module):
    def __init__(self, obs_dim, act_dim, latent, deter=200, hidden=200, free_nats=1.0):
        super().__init__()
        self.latent, self.d, self.free = latent, deter, free_nats
        if latent == "gaussian":
            self.s, self.stats = 30, 60
        else:
            self.g, self.k, self.unimix = 32, 32, 0.01
            self.s = self.stats = self.g * self.k
        self.encoder = nn.Sequential(mlp(obs_dim, [200], 200), nn.SiLU())
        self.img_in_z = nn.Linear(self.s, hidden, bias=False)
        self.img_in_a = nn.Linear(act_dim, hidden)
        self.gru = nn.Linear(hidden + deter, 3 * deter)
        with torch.no_grad():
            self.gru.bias[2 * deter:] -= 1.0
        self.prior_hidden = nn.Linear(deter, hidden)
        self.prior_stats = nn.Linear(hidden, self.stats)
        self.post_h = nn.Linear(deter, hidden, bias=False)
        self.post_e = nn.Linear(200, hidden)
        self.post_stats = nn.Linear(hidden, self.stats)
        feat = deter + self.s
        self.decoder = mlp(feat, [200, 200], obs_dim)
        self.reward = mlp(feat, [200, 200], 1)
        self.cont = mlp(feat, [200, 200], 1)

    def dist(self, stats):
        if self.latent == "gaussian":
            mean, raw = stats.chunk(2, -1)
            return (mean, F.softplus(raw) + 0.1)
        shape = stats.shape[:-1] + (self.g, self.k)
        probs = torch.softmax(stats.reshape(shape), -1) * (1 - self.unimix) + self.unimix / self.k
        return (probs.reshape(stats.shape),)

    def sample(self, dist):
        if self.latent == "gaussian":
            mean, std = dist
            return mean + std * torch.randn_like(mean)
        (probs,) = dist
        p = probs.reshape(probs.shape[0], self.g, self.k)
        idx = torch.multinomial(p.detach().reshape(-1, self.k), 1).reshape(p.shape[:-1])
        one_hot = F.one_hot(idx, self.k).float()
        return (one_hot + p - p.detach()).reshape(probs.shape)

    def kl(self, q, p):
        if self.latent == "gaussian":
            (mq, sq), (mp, sp) = q, p
            return (torch.log(sp / sq) + (sq ** 2 + (mq - mp) ** 2) / (2 * sp ** 2) - 0.5).sum(-1)
        (pq,), (pp,) = q, p
        return (pq * (pq.log() - pp.log())).sum(-1)

    def gru_step(self, x, h):
        d = self.d
        parts = self.gru(torch.cat([x, h], -1))
        reset = torch.sigmoid(parts[:, :d])
        cand = torch.tanh(reset * parts[:, d:2 * d])
        update = torch.sigmoid(parts[:, 2 * d:])
        return h + update * (cand - h)

    def loss(self, obs, act, rew, first, term):
        # Inputs batch-major [B, T, ..]; internally time-major.
        b, t, _ = obs.shape
        obs, act = obs.transpose(0, 1), act.transpose(0, 1)
        rew, first, term = rew.transpose(0, 1), first.transpose(0, 1), term.transpose(0, 1)
        keep = (1 - first).unsqueeze(-1)
        act = act / 2.0 * keep  # [-2, 2] -> [-1, 1], zeroed at episode starts
        embed_proj = self.post_e(self.encoder(symlog(obs)))  # [T, B, H]
        act_proj = self.img_in_a(act)
        h = obs.new_zeros(b, self.d)
        z = obs.new_zeros(b, self.s)
        hs, zs, posts = [], [], []
        for i in range(t):
            if i > 0:
                h, z = h * keep[i], z * keep[i]
            h = self.gru_step(F.silu(self.img_in_z(z) + act_proj[i]), h)
            post = self.dist(self.post_stats(F.silu(self.post_h(h) + embed_proj[i])))
            z = self.sample(post)
            hs.append(h)
            zs.append(z)
            posts.append(post)
        deter = torch.cat(hs, 0)
        stoch = torch.cat(zs, 0)
        post = tuple(torch.cat(p, 0) for p in zip(*posts))
        prior = self.dist(self.prior_stats(F.silu(self.prior_hidden(deter))))
        feat = torch.cat([deter, stoch], -1)
        n = b * t
        obs_err = (self.decoder(feat) - symlog(obs.reshape(n, -1))) ** 2
        recon = 0.5 * obs_err.sum(-1).mean()
        reward = 0.5 * ((self.reward(feat).reshape(n) - symlog(rew.reshape(n))) ** 2).mean()
        cont = F.binary_cross_entropy_with_logits(self.cont(feat).reshape(n), 1 - term.reshape(n))
        sg = lambda d: tuple(x.detach() for x in d)
        kl_dyn = self.kl(sg(post), prior)
        dyn = kl_dyn.clamp_min(self.free).mean()
        rep = self.kl(post, sg(prior)).clamp_min(self.free).mean()
        total = recon + reward + cont + 0.5 * dyn + 0.1 * rep
        spread = lambda d: d[1].mean() if self.latent == "gaussian" else -(d[0] * d[0].log()).sum(-1).mean()
        metrics = torch.stack([kl_dyn.mean(), spread(sg(post)), spread(sg(prior)), obs_err.mean()]).detach()
        return total, metrics


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latent", default="both", choices=["gaussian", "categorical", "both"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kinds = ["gaussian", "categorical"] if args.latent == "both" else [args.latent]
    b, t, o = args.batch, args.seq_len, 3
    for kind in kinds:
        torch.manual_seed(0)
        model = Rssm(o, 1, kind)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, eps=1e-8)
        rng = np.random.default_rng(0)
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
            obs, act, rew, first, term = (torch.from_numpy(x) for x in (obs_np, act_np, rew_np, first_np, term_np))
            loss, metrics = model.loss(obs, act, rew, first, term)
            metrics.tolist()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
            optimizer.step()
            if step >= args.warmup:
                times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        q = lambda p: times[round((len(times) - 1) * p)]
        print(json.dumps({
            "implementation": f"PyTorch {torch.__version__}", "model": f"rssm_{kind}",
            "threads": torch.get_num_threads(), "batch": b, "seq_len": t, "deter": 200,
            "median_ms": round(q(0.5), 2), "p10_ms": round(q(0.1), 2), "p90_ms": round(q(0.9), 2),
            "updates_per_s": round(1e3 / q(0.5), 2),
        }))


if __name__ == "__main__":
    main()
