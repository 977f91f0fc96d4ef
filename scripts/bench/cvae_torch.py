#!/usr/bin/env python3
"""The cVAE update of worldmodel (crates/models/src/cvae.rs) in PyTorch, timed like `wm bench update`.

Same architecture and loss: x = [s_n, one-hot a]; posterior MLP [x, d_n] -> 2L; learned prior MLP
x -> 2L; decoder MLP [x, z] -> [delta mean (O) | raw log-std (O) | reward | termination logit];
SiLU hidden layers; log-stds softly bounded by tanh; KL with free bits on the posterior side and
the prior trained on KL(sg(q) || p); reward Gaussian NLL with a scalar log-std; termination BCE;
five diagnostics read back per step; Adam with global-norm clipping. The batch is sampled from
CartPole-like data on the host and copied in each step, as in Rust.

Usage: python scripts/bench/cvae_torch.py --threads 2 --batch 256 --hidden 256 --steps 200
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LN_2PI = math.log(2 * math.pi)


def mlp(inp, hidden, out):
    layers, width = [], inp
    for h in hidden:
        layers += [nn.Linear(width, h), nn.SiLU()]
        width = h
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


def soft_bound(raw, lo, hi):
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    offset = math.atanh(max(-0.999, min(0.999, -mid / half)))
    return torch.tanh(raw + offset) * half + mid


def kl_diag(qm, qs, pm, ps):
    # KL(N(qm, e^qs) || N(pm, e^ps)) summed over the last dimension.
    return (ps - qs + (torch.exp(2 * qs) + (qm - pm) ** 2) / (2 * torch.exp(2 * ps)) - 0.5).sum(-1)


class Cvae(nn.Module):
    def __init__(self, obs_dim, n_actions, hidden, latent=4, lo=-5.0, hi=2.0, free_nats=1.0):
        super().__init__()
        x = obs_dim + n_actions
        self.o, self.n, self.l, self.lo, self.hi, self.free = obs_dim, n_actions, latent, lo, hi, free_nats
        self.posterior = mlp(x + obs_dim, hidden, 2 * latent)
        self.prior = mlp(x, hidden, 2 * latent)
        self.decoder = mlp(x + latent, hidden, 2 * obs_dim + 2)
        self.reward_log_std = nn.Parameter(torch.zeros(1))

    def split(self, out):
        return out[:, : self.l], soft_bound(out[:, self.l :], self.lo, self.hi)

    def loss(self, s_n, a, d_n, r_n, term):
        x = torch.cat([s_n, F.one_hot(a, self.n).float()], 1)
        qm, qs = self.split(self.posterior(torch.cat([x, d_n], 1)))
        pm, ps = self.split(self.prior(x))
        z = qm + torch.exp(qs) * torch.randn_like(qm)
        h = self.decoder(torch.cat([x, z], 1))
        o = self.o
        mean, log_std = h[:, :o], soft_bound(h[:, o : 2 * o], self.lo, self.hi)
        reward_mean, term_logit = h[:, 2 * o], h[:, 2 * o + 1]
        recon = -(-0.5 * ((d_n - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * LN_2PI).sum(1).mean()
        kl_raw = kl_diag(qm, qs, pm, ps).detach().mean()
        for_posterior = kl_diag(qm, qs, pm.detach(), ps.detach()).clamp_min(self.free)
        for_prior = kl_diag(qm.detach(), qs.detach(), pm, ps)
        kl = (for_posterior + for_prior - for_prior.detach()).mean()
        rls = soft_bound(self.reward_log_std, self.lo, self.hi)
        reward = (0.5 * ((r_n - reward_mean) * torch.exp(-rls)) ** 2 + rls + 0.5 * LN_2PI).mean()
        termination = F.binary_cross_entropy_with_logits(term_logit, term)
        metrics = torch.stack([kl_raw, torch.exp(log_std).mean(), torch.exp(qs).mean(), torch.exp(rls)[0],
                               ((d_n - mean) ** 2).mean(), torch.exp(ps).mean()]).detach()
        return recon + kl + reward + termination, metrics


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = Cvae(4, 2, [args.hidden, args.hidden]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8)
    rng = np.random.default_rng(0)
    n = 10_000  # a replay of CartPole-sized transitions, sampled on the host like worldmodel's
    obs = rng.normal(size=(n, 4)).astype(np.float32)
    act = rng.integers(0, 2, size=n)
    nxt = (obs + 0.05 * rng.normal(size=(n, 4))).astype(np.float32)
    rew = np.ones(n, dtype=np.float32)
    ter = (rng.random(n) < 0.05).astype(np.float32)
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        idx = rng.integers(0, n, size=args.batch)
        s = torch.from_numpy(obs[idx]).to(device)
        d = torch.from_numpy(nxt[idx] - obs[idx]).to(device)
        a = torch.from_numpy(act[idx]).to(device)
        r = torch.from_numpy(rew[idx]).to(device)
        t = torch.from_numpy(ter[idx]).to(device)
        loss, metrics = model.loss(s, a, d, r, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        optimizer.step()
        metrics.cpu()
        loss.item()
        if step >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    q = lambda p: times[round((len(times) - 1) * p)]
    print(json.dumps({
        "implementation": f"PyTorch {torch.__version__}", "model": "cvae", "device": args.device,
        "threads": torch.get_num_threads(), "batch": args.batch, "hidden": args.hidden, "steps": args.steps,
        "median_ms": q(0.5), "p10_ms": q(0.1), "p90_ms": q(0.9), "updates_per_s": 1e3 / q(0.5),
    }))


if __name__ == "__main__":
    main()
