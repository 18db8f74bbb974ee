"""How fast the command line answers, side by side with ``python -c "import hydra"``.

    python -m scripts.bench_cli [--rounds 7] [--status]

Each round runs, one after the other (so a busy machine slows them alike): the import of
Hydra alone (the floor: the runner needs Hydra to read its command line), a mistyped key
(``python -m experiments.train trainer.epoch=3``), ``--help``, and a tab completion (the query
the shell's completion function sends: ``COMP_LINE=... python -m experiments.train -sc
query=bash``). ``--help`` and a completion compose the config the first time (cold) and read
the answer kept then (``experiments.answer_cache``) after (warm): the first round runs with an
empty cache in a temporary folder, the others read it. It prints the cold seconds, the min and
median warm seconds, their ratios to the import of Hydra, and the load average, then whether
each is within the targets (1.5 s on an idle 2-core machine, 2x the import of Hydra).
``--status`` also times ``make status PRESET=paper`` and ``make reproduce DRY_RUN=1`` (target:
10 s), each with an empty cache, then again. None of these imports torch: each command's
imported modules are checked too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from experiments.answer_cache import CACHE_ENV

REPO = Path(__file__).resolve().parents[1]
TARGET_S, TARGET_RATIO, STATUS_TARGET_S = 1.5, 2.0, 10.0
RUNNER = (sys.executable, "-m", "experiments.train")
# (name, command, environment, expected exit status)
COMMANDS: list[tuple[str, tuple[str, ...], dict[str, str], int]] = [
    ("import hydra", (sys.executable, "-c", "import hydra"), {}, 0),
    ("bad key", (*RUNNER, "trainer.epoch=3"), {}, 2),
    ("--help", (*RUNNER, "--help"), {}, 0),
    (
        "tab completion",
        (*RUNNER, "-sc", "query=bash"),
        {"COMP_LINE": "autodrop-train trainer.ep", "COMP_POINT": "25"},
        0,
    ),
]
HEAVY = ("torch", "numpy", "pandas", "matplotlib", "wandb")
# Prints the heavy modules a command imported, when it exits (the runner's or Hydra's own exit).
_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('HEAVY', sorted(m for m in {heavy} if m in sys.modules), "
    "file=sys.stderr))\n"
    "sys.argv = ['experiments.train', *{args}]\n"
    "import runpy; runpy.run_module('experiments.train', run_name='__main__')\n"
)


def timed(command: Sequence[str], env: dict[str, str], expected: int) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if result.returncode != expected:
        raise SystemExit(
            f"{' '.join(command)} exited {result.returncode}, expected {expected}:\n"
            f"{result.stderr[-2000:]}"
        )
    return seconds


def heavy_imports(command: Sequence[str], env: dict[str, str]) -> list[str]:
    """The heavy modules a runner command imports (none for ``import hydra``), composing."""
    if command[:3] != RUNNER:
        return []
    code = _PROBE.format(heavy=HEAVY, args=list(command[3:]))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **env, CACHE_ENV: "off"},
        capture_output=True,
        text=True,
        check=False,
    )
    line = next(line for line in result.stderr.splitlines() if line.startswith("HEAVY "))
    return eval(line.removeprefix("HEAVY "))  # noqa: S307 - our own probe's printed list


def make_seconds(arguments: Sequence[str], cache: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["make", *arguments],
        cwd=REPO,
        env={**os.environ, CACHE_ENV: str(cache)},
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--status", action="store_true", help="also time make status and DRY_RUN")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error(f"--rounds {args.rounds} is invalid: must be >= 2 (one cold, then warm)")
    times: dict[str, list[float]] = {name: [] for name, *_ in COMMANDS}
    loads = []
    with tempfile.TemporaryDirectory() as folder:
        cache = {CACHE_ENV: folder}
        for _ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for name, command, env, expected in COMMANDS:
                times[name].append(timed(command, {**env, **cache}, expected))
    base_min, base_median = min(times["import hydra"]), statistics.median(times["import hydra"])
    print(
        f"{args.rounds} rounds on {os.cpu_count()} CPUs, load average "
        f"{min(loads):.1f}-{max(loads):.1f} (1 min); seconds, and x the import of Hydra; cold: "
        "the first round (nothing kept), warm: the others"
    )
    print(
        f"{'command':<16}{'cold s':>8}{'cold x':>8}{'warm min s':>12}{'median s':>10}"
        f"{'min x':>8}{'median x':>10}  heavy"
    )
    within = True
    for name, command, env, _ in COMMANDS:
        cold, warm = times[name][0], times[name][1:]
        low, middle = min(warm), statistics.median(warm)
        heavy = heavy_imports(command, env)
        print(
            f"{name:<16}{cold:>8.2f}{cold / base_min:>8.2f}{low:>12.2f}{middle:>10.2f}"
            f"{low / base_min:>8.2f}{middle / base_median:>10.2f}  {', '.join(heavy) or 'none'}"
        )
        if name != "import hydra":
            within &= low / base_min <= TARGET_RATIO and not heavy
    print(
        f"targets: <= {TARGET_S} s on an idle 2-core machine and <= {TARGET_RATIO}x the import "
        f"of Hydra (warm min over min): {'met' if within else 'NOT met'} for the ratio"
    )
    if args.status:
        for arguments in (["status", "PRESET=paper"], ["reproduce", "DRY_RUN=1"]):
            with tempfile.TemporaryDirectory() as folder:
                cold = make_seconds(arguments, Path(folder))
                warm = make_seconds(arguments, Path(folder))
            verdicts = [
                f"{label} {seconds:.1f} s ({'within' if seconds <= STATUS_TARGET_S else 'over'} "
                f"{STATUS_TARGET_S:g} s)"
                for label, seconds in (("cold", cold), ("warm", warm))
            ]
            print(f"make {' '.join(arguments)}: {', '.join(verdicts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
