"""Hydra callbacks of the runner (listed under ``hydra.callbacks`` in conf/config.yaml)."""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict


class ValidateBeforeSweep(Callback):
    """Validate the sweep's shared config before the sweeper writes anything (multirun.yaml).

    Each job validates its own config again (swept values are only known per job), and writes
    nothing before that either. Hydra turns a callback's exception into a warning, so a refusal
    exits here (status 2) with one line.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from experiments.validation import validate_config

        task = config.copy()
        with open_dict(task):
            del task["hydra"]
        try:
            validate_config(task)
        except ValueError as error:  # ConfigError and the library's argument checks
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
