#!/usr/bin/env python3
"""Reads a run folder's event files with TensorBoard's own loader and prints each scalar tag's
first and last values, so you can check that TensorBoard parses what `wm train` wrote and that the
losses fall. Usage: .venv/bin/pip install tensorboard && .venv/bin/python scripts/check_tensorboard.py runs/X
"""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> None:
    run = sys.argv[1]
    accumulator = EventAccumulator(run, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    print(f"{run}: {len(tags['scalars'])} scalar tags, images {tags['images']}, tensors {tags['tensors']}")
    for tag in sorted(tags["scalars"]):
        events = accumulator.Scalars(tag)
        first, last = events[0], events[-1]
        print(f"  {tag:<32} {len(events):>5} points  step {first.step:>6}: {first.value:>11.4f}   step {last.step:>6}: {last.value:>11.4f}")


if __name__ == "__main__":
    main()
