#!/usr/bin/env python3
"""Gymnasium's environment step throughput, timed exactly like `wm bench env`.

Random actions are pre-sampled into a pool of 4096 and cycled through; resets on episode end are
included in the timed loop; the median of --repeats repetitions is reported.
Run through scripts/bench/env.sh, which runs both sides in one go.
"""
import argparse
import json
import time

import gymnasium as gym
import numpy as np

POOL = 4096


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = gym.make(args.env)
    env.action_space.seed(args.seed)
    actions = [env.action_space.sample() for _ in range(POOL)]
    seconds = []
    episodes = 0
    for _ in range(args.repeats):
        env.reset(seed=args.seed)
        episodes = 0
        start = time.perf_counter()
        for step_idx in range(args.steps):
            _, _, terminated, truncated, _ = env.step(actions[step_idx % POOL])
            if terminated or truncated:
                env.reset()
                episodes += 1
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    print(json.dumps({
        "env": args.env,
        "steps_per_repeat": args.steps,
        "repeats": args.repeats,
        "median_steps_per_s": args.steps / median,
        "median_ns_per_step": median * 1e9 / args.steps,
        "episodes_per_repeat": episodes,
        "gymnasium": gym.__version__,
    }))


if __name__ == "__main__":
    main()
