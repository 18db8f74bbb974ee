"""A plain table of rows and its text, laid out as ``pandas.DataFrame.to_string(index=False)``
lays out the same frame: right-aligned columns one space apart, a numeric column's header after
a space, floats with the fewest common decimals (at least one), ``NaN`` for a missing number.
For the command line's tables that must not pay pandas' import (``make status``;
tests/test_text_table.py compares both)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_FLOAT_DIGITS = 6  # pandas' display.precision


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rows

    def column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_string(self) -> str:
        values = [self.column(name) for name in self.columns]
        cells = [_column_text(column) for column in values]
        # A numeric column's header has a leading space (pandas leaves room for a sign).
        names = [
            f" {name}" if _is_numeric(column) else name
            for name, column in zip(self.columns, values, strict=True)
        ]
        widths = [
            max([len(name), *(len(text) for text in texts)])
            for name, texts in zip(names, cells, strict=True)
        ]
        header = " ".join(name.rjust(w) for name, w in zip(names, widths, strict=True))
        lines = [header]
        for i in range(len(self.rows)):
            lines.append(
                " ".join(texts[i].rjust(w) for texts, w in zip(cells, widths, strict=True))
            )
        return "\n".join(lines)


def _is_numeric(values: Sequence[Any]) -> bool:
    return bool(values) and all(isinstance(v, int | float) for v in values)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _column_text(values: Sequence[Any]) -> list[str]:
    """Each value's text; a column holding a float is formatted as pandas formats floats: every
    value to the same number of decimals, the fewest that keep all of them at 6 digits."""
    if not any(isinstance(v, float) for v in values):
        return ["NaN" if _is_missing(v) else str(v) for v in values]
    texts = [None if _is_missing(v) else f"{float(v):.{_FLOAT_DIGITS}f}" for v in values]
    present = [text for text in texts if text is not None]
    while present and all(t.endswith("0") and not t.endswith(".0") for t in present):
        texts = [None if t is None else t[:-1] for t in texts]
        present = [t for t in texts if t is not None]
    return ["NaN" if t is None else t for t in texts]
