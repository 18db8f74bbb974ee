"""Noisy quadratic model: write the Fig. 1-2 traces (nqm.npz) and the Theorem 3.2 limit-angle
check (nqm.json) of :mod:`scripts.analysis.nqm`.

    python -m scripts.nqm [--out results/quick/nqm] [--iterations 6000] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from scripts.analysis.nqm import write_results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/quick/nqm", help="output directory")
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mc-samples", type=int, default=20000, help="samples for the exact stationary angle"
    )
    args = parser.parse_args(argv)
    paths = write_results(args.out, args.iterations, args.seed, mc_samples=args.mc_samples)
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
