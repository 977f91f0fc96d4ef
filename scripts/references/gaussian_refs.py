#!/usr/bin/env python3
"""Golden values for crates/models/src/dist.rs (diagonal Gaussian log-density and KL).

Standard library only (`math`), so it runs with any python3:

    python3 scripts/references/gaussian_refs.py

Prints Rust-ready literals; the test `dist::tests::*_match_python_golden_values` hard-codes them.
"""
import math

LOG_2PI = math.log(2.0 * math.pi)


def log_density(x, mean, log_std):
    """sum_i log N(x_i; mean_i, exp(log_std_i)^2)."""
    total = 0.0
    for xi, mi, li in zip(x, mean, log_std):
        z = (xi - mi) / math.exp(li)
        total += -0.5 * z * z - li - 0.5 * LOG_2PI
    return total


def kl(mq, lq, mp, lp):
    """KL(N(mq, exp(lq)^2) || N(mp, exp(lp)^2)), summed over dimensions."""
    total = 0.0
    for a, la, b, lb in zip(mq, lq, mp, lp):
        va, vb = math.exp(2 * la), math.exp(2 * lb)
        total += lb - la + (va + (a - b) ** 2) / (2 * vb) - 0.5
    return total


# Rows of a batch of 3, dimension 3.
X = [[0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [3.0, -2.5, 0.1]]
MEAN = [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.2]]
LOG_STD = [[0.0, 0.5, -1.0], [0.0, 0.0, 0.0], [1.2, -0.3, -4.0]]

MQ = [[0.3, -0.7, 1.5], [0.0, 0.0, 0.0], [2.0, -1.0, 0.0]]
LQ = [[-0.5, 0.2, -2.0], [0.0, 0.0, 0.0], [-3.0, 1.0, 0.4]]
MP = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 0.0]]
LP = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, -1.0, 0.4]]

if __name__ == "__main__":
    print("log_density:", "[" + ", ".join(repr(log_density(x, m, l)) for x, m, l in zip(X, MEAN, LOG_STD)) + "]")
    print("kl:", "[" + ", ".join(repr(kl(*r)) for r in zip(MQ, LQ, MP, LP)) + "]")
