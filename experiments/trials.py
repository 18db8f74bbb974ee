"""The tuning study's trials: a schedule's pool of trials is its search space (declared with the
schedule, ``autodrop.search_space``) at the points of a scrambled Halton sequence, as AlgoPerf
draws its trials (``scipy.stats.qmc.Halton``, seeded with ``tuning.pool_seed``).

The k-th coordinate of point n sets the k-th knob of the space (in its declared order, the
initial lr first), through the knob's distribution. Point n does not depend on how many points
are drawn, so a pool grows by adding trials; spaces of the same size share their points, so
trial n of every schedule tries the same initial lr (common random numbers across schedules).
``experiments.studies.with_trial`` applies a trial to a run's config through the
``tuning_draw`` resolver (:func:`trial_value`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import qmc

from autodrop import registry


def halton_points(dimensions: int, seed: int, count: int) -> np.ndarray:
    """The first ``count`` points of the scrambled Halton sequence in ``dimensions`` dimensions
    seeded with ``seed`` (rows; each coordinate in [0, 1)): the same points for the same seed,
    and a sequence, so point n does not depend on how many are drawn."""
    return qmc.Halton(d=dimensions, scramble=True, seed=seed).random(count)


@functools.lru_cache(maxsize=256)
def _trial_point(dimensions: int, seed: int, trial: int) -> tuple[float, ...]:
    return tuple(float(u) for u in halton_points(dimensions, seed, trial + 1)[trial])


def trial_value(key: str, schedule: str, trial: int, pool_seed: int, base: Any) -> Any:
    """The value of ``key`` in trial ``trial`` of ``schedule``'s pool (the ``tuning_draw``
    resolver): its search space's distribution at the trial's Halton point; ``base`` is the
    configured value a relative distribution scales. ValueError for a key outside the space."""
    space = registry.schedule_search_space(schedule)
    if key not in space:
        raise ValueError(f"{key} is not in the search space of scheduler={schedule}")
    point = _trial_point(len(space), int(pool_seed), int(trial))
    return space[key].value(point[list(space).index(key)], base)


def pool(schedule: str, pool_seed: int, trials: int, bases: Mapping[str, Any]) -> list[dict]:
    """The first ``trials`` trials of ``schedule``'s pool: per trial, its search-space values
    (``bases``: the configured values relative knobs scale)."""
    space = registry.schedule_search_space(schedule)
    points = halton_points(len(space), pool_seed, trials)
    return [
        {
            key: d.value(float(u), bases.get(key))
            for (key, d), u in zip(space.items(), row, strict=True)
        }
        for row in points
    ]
