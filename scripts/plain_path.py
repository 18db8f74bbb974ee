"""How far the training path is from the command line to the first optimizer step, measured.

    python -m scripts.plain_path [overrides ...]

runs ``python -m experiments.train`` in this process on a tiny run (8x8 digits, one epoch, into
a temporary folder; the overrides given are added) and traces the suite's own code (autodrop/,
models/, experiments/) until the first ``optimizer.step()``. It prints:

- the plain path: the suite's frames on the call stack at that step, and the files they are in
  with their lengths (what a reader opens to follow the command line down to the step);
- what ran before the step: the suite functions called, their files and the lines of their
  bodies (what a reader reads to follow everything that happened; module bodies run by imports
  are not counted, so a module imported late counts as one imported first);
- how the config travels: the calls that received the config (an OmegaConf node, or a dataclass
  whose class name ends in ``Settings`` or ``Config``) as a sequence of files, its stays (calls
  in a row in one file count once) and its returns to a file it had already left.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRACED = tuple(str(REPO / package) + "/" for package in ("autodrop", "models", "experiments"))
TINY = (
    "experiment=quick/digits",
    "data.image_size=8",
    "trainer.epochs=1",
    "trainer.cpu_threads=1",
    "trainer.progress=plain",
    "logger=none",
)


def _is_config(value: Any) -> bool:
    if type(value).__module__.startswith("omegaconf"):
        return True
    name = type(value).__name__
    return dataclasses.is_dataclass(value) and name.endswith(("Settings", "Config"))


def _relative(filename: str) -> str:
    return str(Path(filename).relative_to(REPO))


def _span(code: Any) -> int:
    lines = [line for _, _, line in code.co_lines() if line is not None]
    return max(lines, default=code.co_firstlineno) - code.co_firstlineno + 1


@dataclasses.dataclass
class Trace:
    calls: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    config_files: list[str] = dataclasses.field(default_factory=list)
    stack: list[str] = dataclasses.field(default_factory=list)
    done: bool = False

    def on_call(self, frame: FrameType, event: str, arg: Any) -> None:
        if self.done or event != "call":
            return None
        code = frame.f_code
        if code.co_name == "step" and _is_optimizer(frame.f_locals.get("self")):
            self.stack = _suite_stack(frame.f_back)
            self.done = True
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
            return None
        if not code.co_filename.startswith(TRACED) or code.co_name == "<module>":
            return None  # other code, or a module's body run by its import (not a function)
        where = _relative(code.co_filename)
        self.calls.append((where, code.co_qualname, _span(code)))
        arguments = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        if any(_is_config(frame.f_locals.get(name)) for name in arguments):
            self.config_files.append(where)
        return None


def _is_optimizer(value: Any) -> bool:
    optim = sys.modules.get("torch.optim")
    return optim is not None and isinstance(value, optim.Optimizer)


def _suite_stack(frame: FrameType | None) -> list[str]:
    frames = []
    while frame is not None:
        if frame.f_code.co_filename.startswith(TRACED):
            frames.append(f"{_relative(frame.f_code.co_filename)}:{frame.f_code.co_qualname}")
        frame = frame.f_back
    return frames[::-1]


def stays(files: Sequence[str]) -> tuple[int, int]:
    """(stays, returns): runs of one file in ``files``, and runs in a file already left."""
    runs = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]
    returns = sum(1 for i, f in enumerate(runs) if f in runs[:i])
    return len(runs), returns


def _lines(relative: str) -> int:
    return len((REPO / relative).read_text().splitlines())


def report(trace: Trace) -> str:
    out = ["== the plain path: the suite's frames on the stack at the first optimizer step"]
    out += [f"  {frame}" for frame in trace.stack]
    files = list(dict.fromkeys(frame.partition(":")[0] for frame in trace.stack))
    total = sum(_lines(f) for f in files)
    out += [
        f"  {len(files)} files, {total} lines: " + ", ".join(f"{f} ({_lines(f)})" for f in files)
    ]
    functions = {(f, name): span for f, name, span in trace.calls}
    called_files = sorted({f for f, _ in functions})
    body = sum(functions.values())
    out.append(
        f"== before the step: {len(functions)} suite functions ran, {body} lines of their "
        f"bodies, in {len(called_files)} files"
    )
    visits, returns = stays(trace.config_files)
    out.append(
        f"== the config: {len(trace.config_files)} calls received it, in "
        f"{len(set(trace.config_files))} files, {visits} stays, {returns} returns to a file "
        "already left"
    )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(REPO))
    from experiments import train

    trace = Trace()
    with tempfile.TemporaryDirectory() as results:
        sys.argv = ["experiments.train", *TINY, *overrides, f"paths.results_dir={results}"]
        sys.setprofile(trace.on_call)
        threading.setprofile(trace.on_call)  # type: ignore[arg-type]
        try:
            train.main()
        except SystemExit as stop:
            if stop.code:
                raise
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
    if not trace.done:
        print("error: the run made no optimizer step", file=sys.stderr)
        return 1
    print(report(trace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
