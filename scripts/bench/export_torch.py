#!/usr/bin/env python3
"""Loads a `wm export --format safetensors` file into the PyTorch twins and checks their
predictions against the reference outputs Rust wrote (`wm export --reference`).

The twins: the cVAE of scripts/bench/cvae_torch.py (the same MLPs, SiLU hidden layers, soft
log-std bounds; `nn.Sequential` index 2*i is the file's `layers.i`) and the actor network of
crates/agent/src/policy.rs. The safetensors file is read with NumPy (an 8-byte header length,
a JSON header, raw little-endian data), so nothing beyond torch and numpy is needed.

Usage:
  # compare one exported file with its reference (exit status 1 if anything differs by > 1e-5)
  python scripts/bench/export_torch.py --file F.safetensors --reference R.json
  # the test (scripts/test.sh): train tiny CartPole and Pendulum runs with an actor using the
  # `wm` binary, export each with a reference, compare
  python scripts/bench/export_torch.py --test --wm target/release/wm
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cvae_torch import mlp, soft_bound  # noqa: E402  (the twins' shared pieces)

TOLERANCE = 1e-5
DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """(tensors by name as NumPy arrays, metadata dict) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n :]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"]).copy()
    return tensors, metadata


def load_mlp(tensors, prefix):
    """The MLP whose layers are `{prefix}.layers.{i}.weight|bias` ([out, in] and [out])."""
    count = len([k for k in tensors if k.startswith(prefix + ".layers.") and k.endswith(".weight")])
    if count == 0:
        raise KeyError(f"no tensors under {prefix}.layers.")
    weights = [tensors[f"{prefix}.layers.{i}.weight"] for i in range(count)]
    hidden = [w.shape[0] for w in weights[:-1]]
    net = mlp(weights[0].shape[1], hidden, weights[-1].shape[0])
    with torch.no_grad():
        for i, w in enumerate(weights):
            net[2 * i].weight.copy_(torch.from_numpy(w))
            net[2 * i].bias.copy_(torch.from_numpy(tensors[f"{prefix}.layers.{i}.bias"]))
    return net


class CvaeTwin(nn.Module):
    """The exported cVAE: normaliser, action encoding, prior, decoder (crates/models/src/cvae.rs)."""

    def __init__(self, tensors, metadata):
        super().__init__()
        config = json.loads(metadata["model_config"])["Cvae"]
        self.lo, self.hi = config["min_log_std"], config["max_log_std"]
        self.latent = config["latent_dim"]
        self.o = int(metadata["obs_dim"])
        self.action = json.loads(metadata["action_space"])
        self.stats = {k.split(".", 1)[1]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("normalizer.")}
        self.decoder = load_mlp(tensors, "model.decoder")
        self.prior = load_mlp(tensors, "model.prior") if config["prior"] == "Learned" else None

    def features(self, obs):
        """The normalised observation: what the actor reads."""
        return (obs - self.stats["obs_mean"]) * (1.0 / self.stats["obs_std"])

    def encode_action(self, action):
        if "Discrete" in self.action:
            return F.one_hot(action[:, 0].long(), self.action["Discrete"]["n"]).float()
        low = torch.tensor(self.action["Continuous"]["low"])
        high = torch.tensor(self.action["Continuous"]["high"])
        scale = 2.0 / (high - low)
        return action * scale + (-1.0 - 2.0 * low / (high - low))

    def x(self, obs, action):
        return torch.cat([self.features(obs), self.encode_action(action)], 1)

    def prior_mean(self, obs, action):
        x = self.x(obs, action)
        if self.prior is None:
            return torch.zeros(x.shape[0], self.latent)
        return self.prior(x)[:, : self.latent]

    def decode(self, obs, action, z):
        h = self.decoder(torch.cat([self.x(obs, action), z], 1))
        o = self.o
        return h[:, :o], soft_bound(h[:, o : 2 * o], self.lo, self.hi), h[:, 2 * o], h[:, 2 * o + 1]

    def mean_next(self, obs, action):
        delta, _, reward, logit = self.decode(obs, action, self.prior_mean(obs, action))
        s = self.stats
        next_obs = obs + s["delta_mean"] + delta * s["delta_std"]
        return next_obs, reward * s["reward_std"][0] + s["reward_mean"][0], torch.sigmoid(logit)


class ActorTwin(nn.Module):
    """The exported actor network (crates/agent/src/policy.rs)."""

    def __init__(self, tensors, metadata):
        super().__init__()
        config = json.loads(metadata["actor_config"])
        self.min_std, self.max_std, self.unimix = config["min_std"], config["max_std"], config["unimix"]
        self.action = json.loads(metadata["action_space"])
        self.net = load_mlp(tensors, "actor.net")

    def forward(self, features):
        out = self.net(features)
        if "Discrete" in self.action:
            n = self.action["Discrete"]["n"]
            probs = F.softmax(out, 1) * (1.0 - self.unimix) + self.unimix / n
            return {"actor_log_probs": probs.log()}
        a = len(self.action["Continuous"]["low"])
        std = torch.sigmoid(out[:, a:] + 2.0) * (self.max_std - self.min_std) + self.min_std
        return {"actor_mean": torch.tanh(out[:, :a]), "actor_std": std}


def twin_outputs(path, reference):
    """What the twins predict for the reference's inputs, by the reference's output names."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("worldmodel_format") != "1":
        raise ValueError(f"{path}: not a worldmodel export (format {metadata.get('worldmodel_format')!r})")
    if metadata["model_kind"] != "cvae":
        raise ValueError(f"{path}: the twin covers the cvae, not {metadata['model_kind']}")
    inputs = {k: torch.tensor(v, dtype=torch.float32) for k, v in reference["inputs"].items()}
    cvae = CvaeTwin(tensors, metadata)
    with torch.no_grad():
        obs, action, z = inputs["obs"], inputs["action"], inputs["z"]
        delta, log_std, reward, logit = cvae.decode(obs, action, z)
        next_obs, mean_reward, term = cvae.mean_next(obs, action)
        out = {
            "prior_mean": cvae.prior_mean(obs, action),
            "decoded_delta_mean": delta,
            "decoded_delta_log_std": log_std,
            "decoded_reward": reward,
            "decoded_term_logit": logit,
            "mean_next_obs": next_obs,
            "mean_reward": mean_reward,
            "mean_terminated_prob": term,
        }
        if metadata["actor_config"] != "null":
            features = cvae.features(obs)
            # The twin computes the actor's input itself; it must equal the one Rust used.
            out["features"] = features
            out.update(ActorTwin(tensors, metadata)(features))
    return out


def compare(path, reference_path):
    """Largest absolute difference per output; raises AssertionError beyond TOLERANCE."""
    with open(reference_path) as f:
        reference = json.load(f)
    ours = twin_outputs(path, reference)
    want = dict(reference["outputs"], features=reference["inputs"].get("features"))
    failures, report = [], []
    for name, value in want.items():
        if value is None:
            continue
        if name not in ours:
            failures.append(f"{name}: the twin has no such output")
            continue
        diff = float(np.max(np.abs(ours[name].numpy() - np.asarray(value, dtype=np.float32))))
        report.append(f"  {name:24s} max |torch - rust| = {diff:.2e}")
        if not diff <= TOLERANCE:
            failures.append(f"{name}: max difference {diff:.3e} > {TOLERANCE}")
    missing = set(ours) - set(want)
    if missing:
        failures.append(f"the reference lacks {sorted(missing)}")
    print("\n".join(report))
    assert not failures, f"{path}: " + "; ".join(failures)
    return len(report)


TINY = [
    "--set", "data.prefill_steps=300", "--set", "data.eval_steps=100", "--set", "schedule.updates=10",
    "--set", "schedule.eval_every=10", "--set", "schedule.checkpoint_every=10", "--set", "optim.batch_size=32",
    "--set", "eval.iwae_samples=[1]", "--set", "eval.max_nll_transitions=16", "--set", "eval.policy_episodes=0",
    "--set", "model.hidden=[16, 16]", "--set", 'data.policy={"Actor": {"hidden": [16, 8], "horizon": 3, "starts": 8}}',
]


def test(wm):
    """Trains tiny actor runs of a discrete and a continuous environment, exports, compares."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with tempfile.TemporaryDirectory() as tmp:
        for config in ["configs/cartpole_cvae_actor.ron", "configs/pendulum_cvae_actor.ron"]:
            runs = os.path.join(tmp, os.path.basename(config))
            subprocess.run([wm, "train", "--config", os.path.join(repo, config), "--runs-dir", runs, "--quiet", *TINY],
                           check=True, stdout=subprocess.DEVNULL)
            (run,) = os.listdir(runs)
            file, ref = os.path.join(tmp, run + ".safetensors"), os.path.join(tmp, run + ".json")
            subprocess.run([wm, "export", "--run", os.path.join(runs, run), "--format", "safetensors",
                            "--out", file, "--reference", ref], check=True, stdout=subprocess.DEVNULL)
            print(f"{config}: {file}")
            n = compare(file, ref)
            print(f"{config}: {n} outputs of the PyTorch twins within {TOLERANCE} of Rust")
    print("export_torch: passed")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file")
    parser.add_argument("--reference")
    parser.add_argument("--test", action="store_true")
    parser.add_argument("--wm", default="target/release/wm")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.test:
        test(args.wm)
    elif args.file and args.reference:
        compare(args.file, args.reference)
    else:
        parser.error("give --file and --reference, or --test")


if __name__ == "__main__":
    main()
