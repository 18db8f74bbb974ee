"""scripts/bench_launches.py counts what a training step calls outside forward, backward and
update: nothing on most steps for a schedule without per-step work (the running sums fold every
64 steps), AutoDrop's one foreach add, and the measurement steps apart."""

from __future__ import annotations

from experiments.config import compose_config
from scripts import bench_launches


def test_the_counts_per_schedule(capsys) -> None:
    batches = bench_launches.staged_batches(70)
    step = bench_launches.count_schedule("step", batches)
    assert len(step.plain) == 69 and step.measurement == []  # the epoch's last step is not one
    launching = [len(s.launching) for s in step.plain]
    assert launching.count(0) == 68  # one fold at step 64
    assert step.passes and 0 < step.mean_plain < 1
    autodrop = bench_launches.count_schedule("autodrop", batches)
    window = compose_config(["experiment=quick/digits", "scheduler=autodrop"]).scheduler.window
    assert len(autodrop.measurement) == 69 // window  # window ends among the 69 counted steps
    assert {tuple(s.launching) for s in autodrop.plain} == {("aten::_foreach_add_",)}
    lines = bench_launches.report([step, autodrop])
    assert lines[2].split()[0] == "step" and "pass" in lines[2]
    assert bench_launches.main(["--steps", "12", "--schedules", "hd"]) == 0
    assert "hd" in capsys.readouterr().out
