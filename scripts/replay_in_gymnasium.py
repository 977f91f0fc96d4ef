#!/usr/bin/env python3
"""Replay rollouts printed by `wm env rollout` in the real Gymnasium and check they match.

Usage:
    wm env rollout ... | .venv/bin/python scripts/replay_in_gymnasium.py
    .venv/bin/python scripts/replay_in_gymnasium.py rollout.jsonl [--tolerance 1e-5]

Input: JSON Lines, one object per step:
    {"env": "CartPole-v1", "episode": k, "t": i, "obs": [...], "action": A, "reward": r,
     "terminated": b, "truncated": b, "next_obs": [...]}
and, on the t == 0 line of each episode, "state": [...], the internal float64 state after reset.
The action may be a number, a list of numbers, or serde's {"Discrete": i} / {"Continuous": [...]}.

For each episode this creates the Gymnasium env (with its TimeLimit), resets it, overwrites
env.unwrapped.state with the recorded state, steps with the recorded actions, and compares obs,
next_obs and reward (absolute tolerance) and terminated/truncated (exactly). Prints one summary
line per env id, e.g.
    CartPole-v1: 12 episodes, 1000 steps, max |obs diff| 3.1e-08: MATCH
and exits with status 1 on any mismatch (2 on malformed input).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import OrderedDict

import gymnasium as gym
import numpy as np

MAX_REPORTED_MISMATCHES = 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", help="JSON Lines file (default: standard input)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    return parser.parse_args()


def read_records(stream) -> "OrderedDict[tuple[str, int], list[dict]]":
    """Group step records by (env id, episode index), keeping the order of first appearance."""
    episodes: OrderedDict[tuple[str, int], list[dict]] = OrderedDict()
    for line_number, line in enumerate(stream, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
            key = (record["env"], int(record["episode"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise SystemExit(f"line {line_number}: not a step record ({error}): {line[:120]}") from None
        episodes.setdefault(key, []).append(record)
    return episodes


def to_gym_action(action, action_space):
    """Convert a recorded action to what the Gymnasium env expects."""
    if isinstance(action, dict):  # serde's externally tagged enum
        (action,) = action.values()
    if isinstance(action_space, gym.spaces.Discrete):
        value = action[0] if isinstance(action, list) else action
        if float(value) != int(value):
            raise ValueError(f"discrete action {action!r} is not an integer")
        return int(value)
    values = action if isinstance(action, list) else [action]
    return np.asarray(values, dtype=action_space.dtype)


def observation_of_state(unwrapped) -> np.ndarray:
    """The observation Gymnasium would return for the current internal state."""
    if hasattr(unwrapped, "_get_obs"):  # Pendulum: [cos, sin, thdot]
        return np.asarray(unwrapped._get_obs(), dtype=np.float32)
    return np.asarray(unwrapped.state, dtype=np.float32)  # CartPole: the state itself


def max_abs_diff(ours, theirs) -> float:
    ours = np.asarray(ours, dtype=np.float64).ravel()
    theirs = np.asarray(theirs, dtype=np.float64).ravel()
    if ours.shape != theirs.shape:
        return math.inf
    return float(np.max(np.abs(ours - theirs))) if ours.size else 0.0


class EnvSummary:
    def __init__(self) -> None:
        self.episodes = 0
        self.steps = 0
        self.max_obs_diff = 0.0
        self.max_reward_diff = 0.0
        self.mismatches: list[str] = []

    def mismatch(self, message: str) -> None:
        self.mismatches.append(message)


def replay_episode(env_id: str, episode: int, records: list[dict], tolerance: float, summary: EnvSummary) -> None:
    where = f"{env_id} episode {episode}"
    records = sorted(records, key=lambda r: r["t"])
    if [r["t"] for r in records] != list(range(len(records))):
        summary.mismatch(f"{where}: steps are not t = 0..{len(records) - 1}")
        return
    if "state" not in records[0]:
        summary.mismatch(f"{where}: the t == 0 record has no \"state\"")
        return

    env = gym.make(env_id)
    env.reset()
    # The recorded state replaces the reset draw; the TimeLimit counter is 0 after reset.
    env.unwrapped.state = np.asarray(records[0]["state"], dtype=np.float64)
    obs = observation_of_state(env.unwrapped)
    summary.episodes += 1
    for record in records:
        t = record["t"]
        diff = max_abs_diff(obs, record["obs"])
        summary.max_obs_diff = max(summary.max_obs_diff, diff)
        if not diff <= tolerance:
            summary.mismatch(f"{where} t={t}: obs {record['obs']} vs gymnasium {obs.tolist()} (diff {diff:.3g})")
        try:
            action = to_gym_action(record["action"], env.action_space)
        except (ValueError, TypeError) as error:
            summary.mismatch(f"{where} t={t}: bad action {record['action']!r}: {error}")
            break
        obs, reward, terminated, truncated, _info = env.step(action)
        summary.steps += 1
        diff = max_abs_diff(obs, record["next_obs"])
        summary.max_obs_diff = max(summary.max_obs_diff, diff)
        if not diff <= tolerance:
            summary.mismatch(f"{where} t={t}: next_obs {record['next_obs']} vs gymnasium {obs.tolist()} (diff {diff:.3g})")
        reward_diff = abs(float(reward) - float(record["reward"]))
        summary.max_reward_diff = max(summary.max_reward_diff, reward_diff)
        if not reward_diff <= tolerance:
            summary.mismatch(f"{where} t={t}: reward {record['reward']} vs gymnasium {float(reward)}")
        flags = (bool(record["terminated"]), bool(record["truncated"]))
        if flags != (bool(terminated), bool(truncated)):
            summary.mismatch(
                f"{where} t={t}: terminated/truncated {flags} vs gymnasium {(bool(terminated), bool(truncated))}"
            )
        if (terminated or truncated) and record is not records[-1]:
            summary.mismatch(f"{where} t={t}: gymnasium ended the episode but the rollout goes on")
            break
    env.close()


def main() -> int:
    args = parse_args()
    if args.path:
        with open(args.path, encoding="utf-8") as stream:
            episodes = read_records(stream)
    else:
        episodes = read_records(sys.stdin)
    if not episodes:
        print("no step records in the input", file=sys.stderr)
        return 2

    summaries: OrderedDict[str, EnvSummary] = OrderedDict()
    for (env_id, episode), records in episodes.items():
        summary = summaries.setdefault(env_id, EnvSummary())
        try:
            replay_episode(env_id, episode, records, args.tolerance, summary)
        except (KeyError, gym.error.Error) as error:
            summary.mismatch(f"{env_id} episode {episode}: {type(error).__name__}: {error}")

    all_match = True
    for env_id, summary in summaries.items():
        verdict = "MATCH" if not summary.mismatches else f"MISMATCH ({len(summary.mismatches)} problems)"
        all_match &= not summary.mismatches
        print(
            f"{env_id}: {summary.episodes} episodes, {summary.steps} steps, "
            f"max |obs diff| {summary.max_obs_diff:.2g}, max |reward diff| {summary.max_reward_diff:.2g}: {verdict}"
        )
        for message in summary.mismatches[:MAX_REPORTED_MISMATCHES]:
            print(f"  {message}", file=sys.stderr)
    return 0 if all_match else 1


if __name__ == "__main__":
    sys.exit(main())
