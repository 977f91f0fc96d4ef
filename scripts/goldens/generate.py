#!/usr/bin/env python3
"""Generate golden trajectories for wm-envs' conformance tests with the real Gymnasium.

Usage (from the repository root):

    scripts/setup-python.sh
    .venv/bin/python scripts/goldens/generate.py

Writes envs/tests/goldens/cartpole_v1.json and envs/tests/goldens/pendulum_v1.json.
The Rust tests (envs/tests/conformance.rs) read these files; Python is not needed at test time.

Each file holds a header (format, env id, gymnasium/numpy/python versions, max_episode_steps),
a list of episodes and a check of the seeded random stream. Each episode records the reset
seed, the internal float64 state right after reset (env.unwrapped.state), the float32
observation, and per step the action, observation, reward, terminated and truncated flags.
Floats are written with Python's repr, which round-trips exactly: nothing is rounded.

Episodes:
  * CartPole-v1: random 0/1 actions (these terminate within a few dozen steps) plus episodes of
    a "balancing" policy (push towards theta + theta_dot) that survive to the 500-step
    TimeLimit truncation, and epsilon-noisy balancing episodes that end at intermediate lengths.
  * Pendulum-v1: uniform float32 torques in [-2.5, 2.5], so the env's clipping to [-2, 2] is
    exercised; every episode is truncated at 200 steps.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "envs" / "tests" / "goldens"

# Seeds of the action-sampling RNG (independent of the env's own reset seeds).
ACTION_SEED = 20240521
FORMAT = "wm-envs golden v1"


def floats(values) -> list[float]:
    """Convert a numpy array (float32 or float64) to Python floats without losing bits."""
    return [float(v) for v in np.asarray(values).ravel()]


def header(env_id: str, env: gym.Env) -> dict:
    return {
        "format": FORMAT,
        "env_id": env_id,
        "gymnasium_version": gym.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "generated_by": "scripts/goldens/generate.py",
        "max_episode_steps": env.spec.max_episode_steps,
    }


def run_episode(env: gym.Env, seed: int, policy_name: str, choose_action) -> dict:
    obs, _info = env.reset(seed=seed)
    episode = {
        "seed": seed,
        "policy": policy_name,
        "initial_state": floats(np.asarray(env.unwrapped.state, dtype=np.float64)),
        "initial_obs": floats(obs),
        "steps": [],
    }
    while True:
        action = choose_action(obs)
        obs, reward, terminated, truncated, _info = env.step(action)
        if isinstance(action, np.ndarray):
            recorded_action = floats(action)
        else:
            recorded_action = int(action)
        episode["steps"].append(
            {
                "action": recorded_action,
                "obs": floats(obs),
                "reward": float(reward),
                "terminated": bool(terminated),
                "truncated": bool(truncated),
            }
        )
        if terminated or truncated:
            return episode


def unseeded_reset_stream(env: gym.Env, seed: int, n_resets: int) -> dict:
    """Initial states of reset(seed) followed by n_resets plain reset() calls.

    Checks that an unseeded reset continues the random stream of the last seeded one.
    """
    env.reset(seed=seed)
    states = [floats(np.asarray(env.unwrapped.state, dtype=np.float64))]
    for _ in range(n_resets):
        env.reset()
        states.append(floats(np.asarray(env.unwrapped.state, dtype=np.float64)))
    return {"seed": seed, "states": states}


def summarize(name: str, episodes: list[dict]) -> str:
    lengths = [len(e["steps"]) for e in episodes]
    n_term = sum(e["steps"][-1]["terminated"] for e in episodes)
    n_trunc = sum(e["steps"][-1]["truncated"] for e in episodes)
    return (
        f"{name}: {len(episodes)} episodes, {sum(lengths)} steps, "
        f"lengths {min(lengths)}..{max(lengths)}, {n_term} terminated, {n_trunc} truncated"
    )


def cartpole() -> dict:
    env_id = "CartPole-v1"
    env = gym.make(env_id)
    action_rng = np.random.default_rng(ACTION_SEED)

    def random_policy(_obs):
        return int(action_rng.integers(0, 2))

    def balancing_policy(obs):
        # Push the cart under the pole: towards the side the pole leans and falls.
        return 1 if obs[2] + obs[3] > 0.0 else 0

    def noisy_balancing_policy(obs):
        if action_rng.random() < 0.15:
            return random_policy(obs)
        return balancing_policy(obs)

    episodes = []
    seed = 0
    for _ in range(25):
        episodes.append(run_episode(env, seed, "random", random_policy))
        seed += 1
    # Balancing episodes: keep the ones that reach the 500-step truncation (most do).
    n_truncated = 0
    while n_truncated < 4:
        episode = run_episode(env, seed, "balance", balancing_policy)
        seed += 1
        if episode["steps"][-1]["truncated"]:
            episodes.append(episode)
            n_truncated += 1
    for _ in range(4):
        episodes.append(run_episode(env, seed, "noisy-balance", noisy_balancing_policy))
        seed += 1

    golden = header(env_id, env)
    golden["action_seed"] = ACTION_SEED
    golden["unseeded_resets"] = unseeded_reset_stream(env, seed=123, n_resets=3)
    golden["episodes"] = episodes
    print(summarize(env_id, episodes))
    return golden


def pendulum() -> dict:
    env_id = "Pendulum-v1"
    env = gym.make(env_id)
    action_rng = np.random.default_rng(ACTION_SEED + 1)

    def random_torque(_obs):
        # Wider than the action space so that the env's clip to [-2, 2] is exercised.
        return action_rng.uniform(-2.5, 2.5, size=(1,)).astype(np.float32)

    episodes = [run_episode(env, seed, "random", random_torque) for seed in range(1000, 1025)]
    golden = header(env_id, env)
    golden["action_seed"] = ACTION_SEED + 1
    golden["unseeded_resets"] = unseeded_reset_stream(env, seed=456, n_resets=3)
    golden["episodes"] = episodes
    print(summarize(env_id, episodes))
    return golden


def write(golden: dict, file_name: str) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / file_name
    # One episode per line keeps diffs readable and the file compact.
    episodes = golden.pop("episodes")
    text = json.dumps(golden, separators=(",", ":"))[:-1] + ',"episodes":[\n'
    text += ",\n".join(json.dumps(e, separators=(",", ":")) for e in episodes)
    text += "\n]}\n"
    json.loads(text)  # the hand-assembled JSON must parse
    path.write_text(text)
    print(f"wrote {path.relative_to(REPO_ROOT)} ({path.stat().st_size} bytes)")


def main() -> int:
    write(cartpole(), "cartpole_v1.json")
    write(pendulum(), "pendulum_v1.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
