"""The status tables' text (scripts.analysis.text_table) is what pandas prints for the same
frame, and `make status` / its dry run import neither torch nor numpy nor pandas."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import pandas as pd
import pytest

from scripts.analysis.text_table import Table
from tests.conftest import REPO_ROOT


def _pandas_text(table: Table) -> str:
    return pd.DataFrame(table.rows, columns=list(table.columns)).to_string(index=False)


def _random_table(draw: random.Random) -> Table:
    columns, makers = [], []
    for i in range(draw.randint(1, 6)):
        kind = draw.choice(["text", "count", "hours", "hours with a gap", "all missing"])
        name = draw.choice(["x", "task", "remaining_h", "a_rather_long_header"]) + str(i)
        columns.append(name)
        if kind == "text":
            makers.append(lambda: draw.choice(["a", "digits/resnet8", "quick/digits", "step-x=1"]))
        elif kind == "count":
            makers.append(lambda: draw.choice([0, 1, 7, 23, 1148]))
        elif kind == "hours":
            makers.append(lambda: round(draw.uniform(0, 6000), draw.randint(0, 3)))
        elif kind == "hours with a gap":
            makers.append(lambda: draw.choice([math.nan, 0.05, 10.0, 1.25, 5348.0, 0.333333]))
        else:
            makers.append(lambda: math.nan)
    rows = [tuple(make() for make in makers) for _ in range(draw.randint(1, 6))]
    return Table(tuple(columns), rows)


@pytest.mark.parametrize("seed", range(40))
def test_a_table_reads_as_pandas_prints_it(seed: int) -> None:
    table = _random_table(random.Random(seed))
    assert table.to_string() == _pandas_text(table)


def test_the_status_tables_read_as_pandas_prints_them() -> None:
    counts = Table(
        ("experiment", "task", "schedule", "finished", "missing", "remaining_h"),
        [
            ("paper/resnet18_cifar10", "cifar10/resnet18", "autodrop", 0, 4, 4.0),
            ("paper/resnet18_cifar10", "cifar10/resnet18", "hd-beta=0.001", 4, 0, 0.0),
            ("study/tuning/digits", "digits/resnet8", "step-trial=10", 1, 0, math.nan),
        ],
    )
    assert counts.to_string() == _pandas_text(counts)


@pytest.mark.parametrize("flag", ["", "--dry-run", "--totals"])
def test_status_imports_nothing_heavy(flag: str, tmp_path) -> None:
    probe = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('HEAVY', sorted(m for m in ('torch', 'numpy', 'pandas') "
        "if m in sys.modules)))\n"
        f"sys.argv = ['scripts.status', '--runs', {str(tmp_path)!r}, '--experiments', "
        "'paper/resnet18_cifar10', '--grid', 'scheduler=step,hd', '--seeds', '0', "
        f"'--data-dir', {str(tmp_path)!r}{', ' + repr(flag) if flag else ''}]\n"
        "runpy.run_module('scripts.status', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env={**os.environ, "AUTODROP_ANSWER_CACHE": "off"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []", done.stdout
