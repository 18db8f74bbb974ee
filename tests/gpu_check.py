"""``make gpu-check``: the GPU path checked and measured in one command, within 8 minutes on one
H200 by the per-section estimates below (``ESTIMATE_S``, reasoned, not yet measured: the
report's seconds are the measurement).

Sections, in the order they run (each in its own process with its own time limit, killed with
everything it started when it reaches it; the JSON and Markdown reports are rewritten after
every section, and a section records its figures as it gets them, so a kill keeps them):
  a. checkpoint round trip on the device, and resume after a kill: identical epochs (compiled,
     deterministic: the fast path keeps exact resume)
  b. quick/digits on the device and on the CPU: both finish, test errors side by side
  c. torchrun, 2 ranks sharing the one device (gloo), trainer.sync_bn on
  d. the compute floor first (ResNet-18 on batches staged on the device: NCHW eager,
     channels_last eager, channels_last compiled, with the compile time), then the runner on a
     fake CIFAR-10 at full size (50k 32x32 images in the real file format; data.verify=false,
     since the official md5s are those of the real files) through paper/resnet18_cifar10 for
     step, autodrop, hd and tlr: ms per step in the second epoch, runner / floor, each method
     over step
  e. a JPEG folder through the ImageNet pipeline (CPU decode, GPU decode, with workers) vs what
     ResNet-50 in bf16 consumes: the GPU's idle fraction
  f. checkpoint save seconds (blocking part, background part) for ResNet-18, WRN-28-10,
     ResNet-50
  g. compile time and the number of graphs over two epochs with short last batches

A section starts only if its estimate fits in what is left of ``--budget-s`` (default 480 s), and
is killed at twice its estimate or at the end of the budget, whichever comes first, so the whole
check stays within the budget.

``--device cpu --tiny`` runs every section through the same code at tiny sizes on the CPU (the
CUDA-only calls go through ``experiments.device_seam``; GPU decoding uses torchvision's CPU
decoder): CI runs it, so a broken section fails long before a GPU is used.

    python -m tests.gpu_check [--out results/gpu_check] [--budget-s 480] [--only d e]
    python -m tests.gpu_check --device cpu --tiny --out /tmp/gpu_check

With ``--device cuda`` (the default) and no CUDA GPU it prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from experiments import device_seam as seam
from experiments import rundir as rd

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_GPU_EXIT = 2
BUDGET_S = 480.0  # the promise: 8 minutes on one H200
LIMIT_FACTOR = 2.0  # a section is killed at this multiple of its estimate
COMMON = ("logger=none", "trainer.progress=plain")
RUN_TIMEOUT_S = 600  # one training launch (the section's own limit comes first)


# --------------------------------------------------------------------------------- the scales
@dataclass(frozen=True)
class Scale:
    """The sizes of every section: ``FULL`` on a GPU, ``TINY`` for the CPU mode CI runs."""

    name: str
    digits: tuple[str, ...]  # extra overrides of the quick/digits runs (a, b, c)
    resume_epochs: int
    digits_epochs: int
    cifar_images: tuple[int, int]  # fake CIFAR-10: train, test
    cifar_run: tuple[str, ...]  # extra overrides of the paper/resnet18_cifar10 runs
    cifar_batch: int
    cifar_eval_batch: int  # divides the test images: one eval graph
    floor_model: str
    floor_batch: int
    floor_steps: tuple[int, int]  # warm-up, timed
    compile_backend: str
    jpegs: tuple[int, int]  # classes, images per class
    jpeg_size: tuple[int, int]
    imagenet_sizes: tuple[int, int]  # crop, resize
    imagenet_batch: int
    workers: int  # -1: the runner's automatic count
    consumer: tuple[str, int, int, tuple[int, int]]  # model, batch, side, (warm-up, timed)
    checkpoint_models: tuple[tuple[str, int, int], ...]  # model, classes, side
    compile_model: str
    compile_batches: tuple[tuple[int, ...], tuple[int, ...]]  # per epoch: train, eval
    estimate_s: dict[str, float] = field(default_factory=dict)


# Seconds per section on one H200 (16 host cores), reasoned: launches of `python -m
# experiments.train` cost ~10 s each (imports, CUDA, Hydra); an inductor compile of ResNet-18's
# training graph ~40 s cold and seconds from the on-disk cache; a CIFAR ResNet-18 epoch ~2 s.
ESTIMATE_S = {
    "a_checkpoint_resume": 75.0,  # 3 launches, a ResNet-8 compiled cold once
    "b_quick_digits": 35.0,  # 10 epochs on the GPU and on one CPU thread
    "c_torchrun_2_ranks_gloo": 30.0,
    "d_cifar_throughput": 130.0,  # floor (one cold compile) + 4 x 2 epochs (cache hits)
    "e_imagenet_pipeline": 40.0,  # 2,048 JPEGs written, decoded twice twice; ResNet-50 timed
    "f_checkpoint_save": 25.0,
    "g_compile": 75.0,  # two short batch shapes compiled cold
}
# The CPU mode on this project's 2-core development machines (load included).
TINY_ESTIMATE_S = {
    "a_checkpoint_resume": 90.0,
    "b_quick_digits": 60.0,
    "c_torchrun_2_ranks_gloo": 60.0,
    "d_cifar_throughput": 120.0,
    "e_imagenet_pipeline": 45.0,
    "f_checkpoint_save": 30.0,
    "g_compile": 60.0,
}

FULL = Scale(
    name="full",
    digits=(),
    resume_epochs=4,
    digits_epochs=10,
    cifar_images=(50_000, 10_000),
    cifar_run=(),
    cifar_batch=128,
    cifar_eval_batch=500,
    floor_model="resnet18",
    floor_batch=128,
    floor_steps=(15, 100),
    compile_backend="inductor",
    jpegs=(8, 256),
    jpeg_size=(500, 375),
    imagenet_sizes=(224, 256),
    imagenet_batch=256,
    workers=-1,
    consumer=("resnet50_imagenet", 256, 224, (5, 20)),
    checkpoint_models=(
        ("resnet18", 10, 32),
        ("wrn28_10", 10, 32),
        ("resnet50_imagenet", 1000, 224),
    ),
    compile_model="resnet18",
    compile_batches=((128, 128, 50_000 % 128), (512, 10_000 % 512)),
    estimate_s=ESTIMATE_S,
)
TINY = Scale(
    name="tiny",
    digits=("data.image_size=8", "trainer.cpu_threads=1"),
    resume_epochs=3,
    digits_epochs=2,
    cifar_images=(256, 128),
    cifar_run=("model=resnet8", "trainer.batch_size=32", "trainer.cpu_threads=1"),
    cifar_batch=32,
    cifar_eval_batch=64,
    floor_model="resnet8",
    floor_batch=16,
    floor_steps=(1, 2),
    compile_backend="aot_eager",  # inductor's C++ compile would take minutes on 2 cores
    jpegs=(2, 6),
    jpeg_size=(64, 48),
    imagenet_sizes=(32, 36),
    imagenet_batch=4,
    workers=1,
    consumer=("resnet8", 4, 32, (1, 2)),
    checkpoint_models=(("resnet8", 10, 32),),
    compile_model="resnet8",
    compile_batches=((16, 16, 5), (32, 7)),
    estimate_s=TINY_ESTIMATE_S,
)


# ------------------------------------------------------------------------------ section context
class Figures:
    """A section's results, written to ``path`` (JSON, atomically) each time one is recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, Any] = {}

    def record(self, key: str, value: Any) -> Any:
        self.values[key] = value
        staging = self.path.with_suffix(".tmp")
        staging.write_text(json.dumps(self.values, indent=2) + "\n")
        os.replace(staging, self.path)
        return value


@dataclass(frozen=True)
class Check:
    """What a section works with: its scratch folder, the device, the sizes, its figures."""

    work: Path
    device: torch.device
    scale: Scale
    figures: Figures

    @property
    def accelerator(self) -> str:
        return self.device.type


# ------------------------------------------------------------------------------------ helpers
def train_cli(
    results: Path,
    *overrides: str,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = ("-m", "experiments.train"),
) -> Path:
    """Run the runner once into ``results``; return the run directory (raise on failure)."""
    command = [sys.executable, *prefix, *COMMON, *overrides, f"paths.results_dir={results}"]
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, "WANDB_MODE": "disabled", **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        # torchrun ends with its summary of the ranks; what a rank said before is above it.
        raise RuntimeError(f"exit {result.returncode}: {result.stderr[-8000:]}")
    return run_dir_of(results)


def train_in_process(results: Path, *overrides: str) -> Path:
    """One run of the runner in this process (``run_job``, what the command line calls)."""
    from experiments.config import compose_with_choices
    from experiments.train import run_job

    args = [*COMMON, *overrides, f"paths.results_dir={results}"]
    return run_job(*compose_with_choices(args), args).run_dir


def run_dir_of(results: Path) -> Path:
    found = sorted(results.glob("runs/**/seed=*"))
    if len(found) != 1:
        raise RuntimeError(f"expected one run under {results}, found {len(found)}")
    return found[0]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / rd.METRICS_FILE).read_text().splitlines()]


def without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def timed_steps(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls, the device's work included."""
    for _ in range(warmup):
        step()
    seam.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seam.synchronize(device)
    return (time.perf_counter() - start) / steps


def bare_train_step(
    model: torch.nn.Module,
    batch: int,
    side: int,
    classes: int,
    channels_last: bool,
    device: torch.device,
) -> Callable[[], None]:
    """One SGD step of ``model`` in bf16 autocast on a batch staged on the device beforehand."""
    images = torch.randn(batch, 3, side, side, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (batch,), device=device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, fused=seam.is_cuda(device) or None
    )

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def device_model(
    name: str, classes: int, channels_last: bool, device: torch.device
) -> torch.nn.Module:
    from models import build_model

    model = build_model(name, classes).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def device_rng_saved(rng: dict[str, Any], device: torch.device) -> bool:
    """Whether a checkpoint's RNG entry holds the state of the generator the run drew from."""
    return bool(rng["cuda"]) if seam.is_cuda(device) else rng["torch"].numel() > 0


# ----------------------------------------------------------------------------------- sections
def check_resume(check: Check) -> None:
    from tests import fault_campaign as faults

    run = (
        "experiment=quick/digits",
        "scheduler=autodrop",
        f"trainer.epochs={check.scale.resume_epochs}",
        f"trainer.accelerator={check.accelerator}",
        "trainer.deterministic=true",
        "trainer.checkpoint_every_epochs=1",  # the device's default is a 10-minute cadence
        *check.scale.digits,
    )
    whole = train_cli(check.work / "whole", *run)
    killed = check.work / "killed"
    try:
        train_cli(
            killed, *run, prefix=("-c", faults.CHILD_CODE), env={faults.KILL_AFTER_SAVES_ENV: "2"}
        )
        raise RuntimeError("the run that should be killed after its 2nd checkpoint finished")
    except RuntimeError as error:
        if "exit -9" not in str(error):
            raise
    resumed = train_cli(killed, *run)
    state = torch.load(resumed / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    summary = read_json(resumed / rd.SUMMARY_FILE)
    record = check.figures.record
    record("finished", summary["status"] == rd.FINISHED)
    record("identical_epochs", without_times(metrics(whole)) == without_times(metrics(resumed)))
    record("device_rng_saved", device_rng_saved(state["rng"][0], check.device))
    record("gpus_recorded", summary.get("gpus"))
    record("resumes", len(summary["resumes"]))


def check_digits(check: Check) -> None:
    run = (
        "experiment=quick/digits",
        "scheduler=step",
        "seed=0",
        f"trainer.epochs={check.scale.digits_epochs}",
        "trainer.compile=false",  # this section compares the numbers, not the speed
        *check.scale.digits,
    )
    found = {}
    for where, accelerator in (("on_device", check.accelerator), ("on_cpu", "cpu")):
        run_dir = train_cli(check.work / where, *run, f"trainer.accelerator={accelerator}")
        summary = read_json(run_dir / rd.SUMMARY_FILE)
        found[where] = check.figures.record(
            where,
            {
                "status": summary["status"],
                "final_test_err": summary["final_test_err"],
                "wall_time_s": round(summary["wall_time_s"], 1),
            },
        )
    difference = found["on_device"]["final_test_err"] - found["on_cpu"]["final_test_err"]
    check.figures.record("err_difference_points", round(difference, 2))


def check_torchrun(check: Check) -> None:
    from experiments.running.processes import BACKEND_ENV
    from tests.conftest import torchrun_train

    run_dir = train_cli(
        check.work,
        "experiment=quick/digits",
        "trainer.epochs=2",
        f"trainer.accelerator={check.accelerator}",
        "trainer.sync_bn=true",
        "trainer.compile=false",
        *check.scale.digits,
        env={BACKEND_ENV: "gloo"},
        prefix=torchrun_train(2),
    )
    summary = read_json(run_dir / rd.SUMMARY_FILE)
    for key in ("status", "world_size", "final_test_err"):
        check.figures.record(key, summary[key])


def compute_floor(check: Check) -> float:
    """ms per step of the bare loop; records each variant, the compiled one last."""
    from experiments.job import compile_model

    scale, device = check.scale, check.device
    warmup, steps = scale.floor_steps
    compiled_ms = 0.0
    for variant, channels_last, compiled in (
        ("nchw_eager", False, False),
        ("channels_last_eager", True, False),
        ("channels_last_compiled", True, True),
    ):
        seam.reset_peak_memory(device)
        model = device_model(scale.floor_model, 10, channels_last, device)
        if compiled:
            model = compile_model(model, backend=scale.compile_backend)
        step = bare_train_step(model, scale.floor_batch, 32, 10, channels_last, device)
        start = time.perf_counter()
        step()  # the first step compiles
        seam.synchronize(device)
        first_s = time.perf_counter() - start
        ms = 1000 * timed_steps(step, warmup, steps, device)
        entry = {"ms_per_step": round(ms, 2), "peak_memory_mib": seam.peak_memory_mib(device)}
        if compiled:
            entry["compile_s"] = round(first_s, 1)
            compiled_ms = ms
        check.figures.record(f"floor_{variant}", entry)
    return compiled_ms


CIFAR_SCHEDULES = ("step", "autodrop", "hd", "tlr")


def cifar_run(name: str, data: Path, scale: Scale, accelerator: str) -> tuple[str, ...]:
    """The overrides of section d's run of schedule ``name``."""
    return (
        "experiment=paper/resnet18_cifar10",
        f"scheduler={name}",
        # Two epochs: the second is timed (the first compiles). The preset's milestones
        # (60/120/160) need 200 epochs: step takes the defaults scaled to 2 (30/60/80 %).
        "trainer.epochs=2",
        *(("scheduler.milestones=null",) if name == "step" else ()),
        f"paths.data_dir={data}",
        "data.verify=false",
        "data.drop_last=true",  # no short last batch: one training graph
        f"trainer.eval_batch_size={scale.cifar_eval_batch}",
        f"trainer.accelerator={accelerator}",
        *scale.cifar_run,
    )


def check_cifar(check: Check) -> None:
    from tests.fake_datasets import write_fake_cifar

    scale = check.scale
    floor_ms = compute_floor(check)  # the compute floor first: the most valuable figure
    data = check.work / "data"
    write_fake_cifar(data, "cifar10", n_train=scale.cifar_images[0], n_test=scale.cifar_images[1])
    check.figures.record(
        "data",
        "fake CIFAR-10 in the official file format (random pixels): data.verify=false, the "
        "official md5s being those of the real files",
    )
    step_ms = None
    for name in CIFAR_SCHEDULES:
        run_dir = train_in_process(
            check.work / name, *cifar_run(name, data, scale, check.accelerator)
        )
        record = metrics(run_dir)[-1]
        ms = 1000 * record["time/iter_s"]
        check.figures.record(
            f"runner_{name}",
            {
                "ms_per_step": round(ms, 2),
                "images_per_s": round(scale.cifar_batch / record["time/iter_s"]),
                "epoch_s": round(record["time/epoch_s"], 2),
            },
        )
        if name == "step":
            step_ms = ms
            check.figures.record("runner_step_over_floor", round(ms / floor_ms, 2))
        else:
            check.figures.record(f"{name}_over_step", round(ms / step_ms, 3))


def check_imagenet(check: Check) -> None:
    from experiments.data import Loading
    from experiments.data.datasets import imagenet
    from experiments.data.imagenet import build_imagenet
    from experiments.runtime import data_workers
    from scripts.bench_data import write_jpeg_folder

    scale, device = check.scale, check.device
    classes, per_class = scale.jpegs
    write_jpeg_folder(check.work, classes=classes, per_class=per_class, size=scale.jpeg_size)
    if not seam.is_cuda(device):
        os.environ[seam.GPU_DECODE_ON_CPU_ENV] = "1"
        check.figures.record("gpu_decode", "on the CPU: torchvision's CPU decoder, same loader")
    workers = check.figures.record("workers", data_workers(scale.workers))
    crop, resize = scale.imagenet_sizes
    for decode in ("cpu", "gpu"):
        bundle = build_imagenet(
            imagenet(str(check.work), crop_size=crop, resize_size=resize, decode=decode),
            Loading(
                batch_size=scale.imagenet_batch,
                eval_batch_size=scale.imagenet_batch,
                device=device,
                seed=0,
                loader="classic",
                num_workers=workers,
                channels_last=True,
            ),
        )
        for epoch in range(2):  # epoch 0 starts the persistent workers; epoch 1 is timed
            bundle.train.set_epoch(epoch)
            seam.synchronize(device)
            start, images = time.perf_counter(), 0
            for batch, _ in bundle.train:
                images += batch.shape[0]
            seam.synchronize(device)
        rate = images / (time.perf_counter() - start)
        check.figures.record(f"{decode}_decode_images_per_s", round(rate))
    name, batch, side, (warmup, steps) = scale.consumer
    model = device_model(name, 1000, True, device)
    seconds = timed_steps(
        bare_train_step(model, batch, side, 1000, True, device), warmup, steps, device
    )
    consume = check.figures.record("model_consumes_images_per_s", round(batch / seconds))
    for decode in ("cpu", "gpu"):
        supply = check.figures.values[f"{decode}_decode_images_per_s"]
        idle = round(max(0.0, 1 - supply / consume), 3)
        check.figures.record(f"{decode}_decode_gpu_idle_fraction", idle)


def check_checkpoint_save(check: Check) -> None:
    from experiments.checkpoint import CheckpointWriter

    device = check.device
    for name, classes, side in check.scale.checkpoint_models:
        model = device_model(name, classes, True, device)
        bare_train_step(model, 2, side, classes, True, device)()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()  # momentum buffers, as in a real checkpoint
        state = {"format": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
        writer = CheckpointWriter(check.work / name / "last.pt")
        rows = []
        for _ in range(2):  # the second save also moves the first to prev.pt
            start = time.perf_counter()
            writer.save(state)
            blocking = time.perf_counter() - start
            writer.wait()
            rows.append((blocking, time.perf_counter() - start))
        check.figures.record(
            name,
            {
                "mb": round((check.work / name / "last.pt").stat().st_size / 2**20, 1),
                "blocking_s": round(rows[-1][0], 3),
                "total_s": round(rows[-1][1], 3),
            },
        )


def check_compile(check: Check) -> None:
    from experiments.job import compile_model

    scale, device = check.scale, check.device
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    model = device_model(scale.compile_model, 10, True, device)
    compiled = compile_model(model, backend=scale.compile_backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    train_batches, eval_batches = scale.compile_batches
    graphs = []
    for epoch in range(2):
        start = time.perf_counter()
        model.train()
        for batch in train_batches:  # full batches and the short last one
            images = torch.randn(batch, 3, 32, 32, device=device)
            images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = compiled(images).float().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            for batch in eval_batches:
                compiled(torch.randn(batch, 3, 32, 32, device=device))
        seam.synchronize(device)
        if epoch == 0:
            check.figures.record("first_epoch_s", round(time.perf_counter() - start, 1))
        graphs.append(counters["stats"]["unique_graphs"])
        check.figures.record("graphs_after_epoch", graphs)
    check.figures.record("recompiles_in_epoch_2", graphs[1] - graphs[0])
    check.figures.record("backend", scale.compile_backend)


SECTIONS: tuple[tuple[str, Callable[[Check], None]], ...] = (
    ("a_checkpoint_resume", check_resume),
    ("b_quick_digits", check_digits),
    ("c_torchrun_2_ranks_gloo", check_torchrun),
    ("d_cifar_throughput", check_cifar),
    ("e_imagenet_pipeline", check_imagenet),
    ("f_checkpoint_save", check_checkpoint_save),
    ("g_compile", check_compile),
)


# ------------------------------------------------------------------ one section in a process
def run_section_here(args: argparse.Namespace) -> int:
    """The child: run one section, its figures to ``args.result`` as they come."""
    function = dict(SECTIONS)[args.section]
    scale = TINY if args.tiny else FULL
    check = Check(Path(args.work), torch.device(args.device), scale, Figures(Path(args.result)))
    try:
        function(check)
    except Exception:  # the parent reads the traceback from this process's log
        traceback.print_exc()
        return 1
    return 0


def section_command(name: str, args: argparse.Namespace, work: Path, result: Path) -> list[str]:
    command = [sys.executable, "-m", "tests.gpu_check", "--section", name, "--device", args.device]
    command += ["--work", str(work), "--result", str(result)]
    return [*command, "--tiny"] if args.tiny else command


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), also those in sessions of their own (torchrun
    starts its workers so)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL ``process``, its process group and every process it started."""
    for _ in range(2):  # a second pass for anything started while the first one ran
        pids = _descendants(process.pid) if process.poll() is None else []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    process.wait()


def run_section(name: str, args: argparse.Namespace, limit_s: float, logs: Path) -> dict[str, Any]:
    """Run section ``name`` in its own process, killed with everything it started at
    ``limit_s``; its entry for the report."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{name}_") as scratch:
        work, result = Path(scratch) / "work", Path(scratch) / "result.json"
        work.mkdir()
        with log_path.open("w") as log:
            process = subprocess.Popen(
                section_command(name, args, work, result),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "WANDB_MODE": "disabled"},
            )
            try:
                code = process.wait(timeout=max(limit_s, 0.0))
                status = "ok" if code == 0 else "failed"
            except subprocess.TimeoutExpired:
                kill_tree(process)
                status = f"killed at its limit ({limit_s:.0f} s)"
        entry: dict[str, Any] = {"status": status, "seconds": round(time.perf_counter() - begin, 1)}
        entry["result"] = read_json(result) if result.exists() else {}
    if status == "failed":
        entry["error"] = log_path.read_text()[-2000:]
    entry["log"] = str(log_path)
    return entry


# ------------------------------------------------------------------------------------- report
def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# gpu-check on {report['device']} ({report['scale']} sizes)",
        "",
        f"Budget {report['budget_s']:.0f} s; estimates: "
        + ("one H200." if report["scale"] == FULL.name else "the CPU mode on 2 shared cores."),
        "",
        "| section | status | s | estimate s | result |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["sections"].items():
        detail = entry.get("result") or entry.get("error", "")
        text = json.dumps(detail) if isinstance(detail, dict) else str(detail)
        text = text.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {name} | {entry['status']} | {entry.get('seconds', '')} | "
            f"{entry.get('estimate_s', '')} | {text} |"
        )
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "gpu_check")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU mode of CI)")
    parser.add_argument(
        "--budget-s", type=float, default=BUDGET_S, help="the whole check's time limit"
    )
    parser.add_argument("--only", nargs="*", help="section names (prefixes) to run")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # the child of one section
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.section:
        return run_section_here(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False): run "
            "`make gpu-check` on a machine with a GPU, or `python -m tests.gpu_check --device "
            "cpu --tiny` for the CPU mode",
            file=sys.stderr,
        )
        return NO_GPU_EXIT
    scale = TINY if args.tiny else FULL
    started = time.perf_counter()
    report: dict[str, Any] = {
        "device": seam.device_name(args.device),
        "scale": scale.name,
        "torch": torch.__version__,
        "budget_s": args.budget_s,
        "sections": {},
    }
    for name, _ in SECTIONS:
        if args.only and not any(name.startswith(p) for p in args.only):
            continue
        estimate = scale.estimate_s[name]
        left = args.budget_s - (time.perf_counter() - started)
        if estimate > left:
            entry = {"status": f"skipped (estimate {estimate:.0f} s, {max(left, 0):.0f} s left)"}
        else:
            entry = run_section(name, args, min(LIMIT_FACTOR * estimate, left), args.out / "logs")
        entry["estimate_s"] = estimate
        report["sections"][name] = entry
        write_report(args.out, report)
        print(f"gpu_check: {name}: {entry['status']} ({entry.get('seconds', 0)} s)", flush=True)
    failed = [n for n, e in report["sections"].items() if e["status"] != "ok"]
    print(
        f"gpu_check: report in {args.out}/gpu_check.md" + (f"; not ok: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
