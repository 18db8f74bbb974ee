"""``make gpu-check``: the GPU path checked and measured in one command (<= 8 minutes on one H200).

Sections, each independent (a failure is recorded and the next one runs; the JSON and Markdown
files are rewritten after every section, so a timeout keeps what finished):
  a. checkpoint round trip with CUDA state, and resume after a kill: identical epochs
  b. quick/digits on CUDA and on the CPU: both finish, test errors side by side
  c. torchrun, 2 ranks sharing the one GPU (gloo), trainer.sync_bn on
  d. fake CIFAR-10 at full size (50k 32x32 in the real file format) through
     paper/resnet18_cifar10 for one epoch per schedule (step, autodrop, hd, tlr): images/s and
     ms per step, and a bare loop on pre-staged tensors (NCHW vs channels_last, eager vs
     compiled): the compute floor the runner is compared with
  e. a JPEG folder through the ImageNet pipeline (CPU decode, GPU decode) vs what ResNet-50 in
     bf16 consumes: the GPU's idle fraction
  f. checkpoint save seconds (blocking part, background part) for ResNet-18, WRN-28-10,
     ResNet-50
  g. compile time and the number of graphs over two epochs with short last batches

    python -m tests.gpu_check [--out results/gpu_check] [--budget-s 470]

Without a CUDA GPU it prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from experiments import rundir as rd
from scripts.bench_data import write_jpeg_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_GPU_EXIT = 2
COMMON = ("logger=none", "trainer.progress=plain")
RUN_TIMEOUT_S = 300


# ------------------------------------------------------------------------------------ helpers
def train_cli(
    results: Path,
    *overrides: str,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = ("-m", "experiments.train"),
) -> Path:
    """Run the runner once into ``results``; return the run directory (raise on failure)."""
    import os

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
        raise RuntimeError(f"exit {result.returncode}: {result.stderr[-1500:]}")
    return run_dir_of(results)


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


def timed_steps(step: Callable[[], None], warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls, GPU work included."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def bare_train_step(
    model: torch.nn.Module, batch: int, side: int, classes: int, channels_last: bool
) -> Callable[[], None]:
    """One SGD step of ``model`` in bf16 autocast on a batch staged on the GPU beforehand."""
    images = torch.randn(batch, 3, side, side, device="cuda")
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (batch,), device="cuda")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def cuda_model(name: str, classes: int, channels_last: bool) -> torch.nn.Module:
    from models import build_model

    model = build_model(name, classes).cuda()
    return model.to(memory_format=torch.channels_last) if channels_last else model


# ----------------------------------------------------------------------------------- sections
def check_resume(work: Path) -> dict[str, Any]:
    from tests import fault_campaign as faults

    run = (
        "experiment=quick/digits",
        "scheduler=autodrop",
        "trainer.epochs=4",
        "trainer.accelerator=cuda",
        "trainer.deterministic=true",
    )
    whole = train_cli(work / "whole", *run)
    killed = work / "killed"
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
    return {
        "finished": read_json(resumed / rd.SUMMARY_FILE)["status"] == rd.FINISHED,
        "identical_epochs": without_times(metrics(whole)) == without_times(metrics(resumed)),
        "cuda_rng_saved": bool(state["rng"][0]["cuda"]),
        "gpus_recorded": read_json(resumed / rd.SUMMARY_FILE).get("gpus"),
    }


def check_digits(work: Path) -> dict[str, Any]:
    run = ("experiment=quick/digits", "scheduler=step", "seed=0")
    out = {}
    for accelerator in ("cuda", "cpu"):
        summary = read_json(
            train_cli(work / accelerator, *run, f"trainer.accelerator={accelerator}")
            / rd.SUMMARY_FILE
        )
        out[accelerator] = {
            "status": summary["status"],
            "final_test_err": summary["final_test_err"],
            "wall_time_s": round(summary["wall_time_s"], 1),
        }
    out["err_difference_points"] = round(
        out["cuda"]["final_test_err"] - out["cpu"]["final_test_err"], 2
    )
    return out


def check_torchrun(work: Path) -> dict[str, Any]:
    from experiments.distributed import BACKEND_ENV
    from tests.conftest import torchrun_train

    run_dir = train_cli(
        work,
        "experiment=quick/digits",
        "trainer.epochs=2",
        "trainer.accelerator=cuda",
        "trainer.sync_bn=true",
        env={BACKEND_ENV: "gloo"},
        prefix=torchrun_train(2),
    )
    summary = read_json(run_dir / rd.SUMMARY_FILE)
    return {
        "status": summary["status"],
        "world_size": summary["world_size"],
        "final_test_err": summary["final_test_err"],
    }


def check_cifar(work: Path) -> dict[str, Any]:
    from experiments.components import compile_model
    from tests.fake_datasets import write_fake_cifar

    data = work / "data"
    write_fake_cifar(data, "cifar10", n_train=50_000, n_test=10_000)
    out: dict[str, Any] = {"runner": {}, "floor": {}}
    for name in ("step", "autodrop", "hd", "tlr"):
        run_dir = train_cli(
            work / name,
            "experiment=paper/resnet18_cifar10",
            f"scheduler={name}",
            "trainer.epochs=1",
            f"paths.data_dir={data}",
        )
        (record,) = metrics(run_dir)
        out["runner"][name] = {
            "ms_per_step": round(1000 * record["time/iter_s"], 2),
            "images_per_s": round(128 / record["time/iter_s"]),
            "epoch_s": round(record["time/epoch_s"], 2),
        }
    for variant, channels_last, compiled in (
        ("nchw_eager", False, False),
        ("channels_last_eager", True, False),
        ("channels_last_compiled", True, True),
    ):
        model = cuda_model("resnet18", 10, channels_last)
        model = compile_model(model) if compiled else model
        seconds = timed_steps(bare_train_step(model, 128, 32, 10, channels_last), 15, 100)
        out["floor"][variant] = {"ms_per_step": round(1000 * seconds, 2)}
    floor = out["floor"]["channels_last_compiled"]["ms_per_step"]
    step = out["runner"]["step"]["ms_per_step"]
    out["runner_step_over_floor"] = round(step / floor, 2)
    for name in ("autodrop", "hd", "tlr"):
        out[f"{name}_over_step"] = round(out["runner"][name]["ms_per_step"] / step, 3)
    return out


def check_imagenet(work: Path) -> dict[str, Any]:
    from experiments.data import DataSettings
    from experiments.data.imagenet import build_imagenet
    from experiments.runtime import AUTO_WORKERS, data_workers

    write_jpeg_folder(work)
    workers = data_workers(AUTO_WORKERS)
    out: dict[str, Any] = {"workers": workers}
    for decode in ("cpu", "gpu"):
        bundle = build_imagenet(
            DataSettings(
                root=str(work),
                batch_size=256,
                eval_batch_size=256,
                device=torch.device("cuda"),
                seed=0,
                loader="classic",
                num_workers=workers,
                channels_last=True,
                decode=decode,
            )
        )
        for epoch in range(2):  # epoch 0 starts the persistent workers; epoch 1 is timed
            bundle.train.set_epoch(epoch)
            torch.cuda.synchronize()
            start, images = time.perf_counter(), 0
            for batch, _ in bundle.train:
                images += batch.shape[0]
            torch.cuda.synchronize()
        out[f"{decode}_decode_images_per_s"] = round(images / (time.perf_counter() - start))
    model = cuda_model("resnet50_imagenet", 1000, channels_last=True)
    seconds = timed_steps(bare_train_step(model, 256, 224, 1000, True), 5, 20)
    out["resnet50_bf16_consumes_images_per_s"] = consume = round(256 / seconds)
    for decode in ("cpu", "gpu"):
        supply = out[f"{decode}_decode_images_per_s"]
        out[f"{decode}_decode_gpu_idle_fraction"] = round(max(0.0, 1 - supply / consume), 3)
    return out


def check_checkpoint_save(work: Path) -> dict[str, Any]:
    from experiments.checkpoint import CheckpointWriter

    out = {}
    for name, classes in (("resnet18", 10), ("wrn28_10", 10), ("resnet50_imagenet", 1000)):
        model = cuda_model(name, classes, channels_last=True)
        bare_train_step(model, 8, 224 if classes == 1000 else 32, classes, True)()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()  # momentum buffers, as in a real checkpoint
        state = {"format": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
        writer = CheckpointWriter(work / name / "last.pt")
        rows = []
        for _ in range(2):  # the second save also moves the first to prev.pt
            start = time.perf_counter()
            writer.save(state)
            blocking = time.perf_counter() - start
            writer.wait()
            rows.append((blocking, time.perf_counter() - start))
        out[name] = {
            "mb": round((work / name / "last.pt").stat().st_size / 2**20, 1),
            "blocking_s": round(rows[-1][0], 3),
            "total_s": round(rows[-1][1], 3),
        }
    return out


def check_compile(work: Path) -> dict[str, Any]:
    from experiments.components import compile_model

    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    model = cuda_model("resnet18", 10, channels_last=True)
    compiled = compile_model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    graphs, first_epoch_s = [], None
    for _epoch in range(2):
        start = time.perf_counter()
        model.train()
        for batch in (128, 128, 50_000 % 128):  # full batches and the short last one
            images = torch.randn(batch, 3, 32, 32, device="cuda").contiguous(
                memory_format=torch.channels_last
            )
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = compiled(images).float().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            for batch in (512, 10_000 % 512):
                compiled(torch.randn(batch, 3, 32, 32, device="cuda"))
        torch.cuda.synchronize()
        first_epoch_s = first_epoch_s or time.perf_counter() - start
        graphs.append(counters["stats"]["unique_graphs"])
    return {
        "compile_s": round(first_epoch_s, 1),
        "graphs_after_epoch": graphs,
        "recompiles_in_epoch_2": graphs[1] - graphs[0],
    }


SECTIONS: tuple[tuple[str, Callable[[Path], dict[str, Any]]], ...] = (
    ("a_checkpoint_resume", check_resume),
    ("b_quick_digits", check_digits),
    ("c_torchrun_2_ranks_gloo", check_torchrun),
    ("d_cifar_throughput", check_cifar),
    ("e_imagenet_pipeline", check_imagenet),
    ("f_checkpoint_save", check_checkpoint_save),
    ("g_compile", check_compile),
)


# ------------------------------------------------------------------------------------- report
def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# gpu-check on {report['device']}",
        "",
        "| section | status | s | result |",
        "|---|---|---|---|",
    ]
    for name, entry in report["sections"].items():
        detail = entry.get("result") or entry.get("error", "")
        text = json.dumps(detail) if isinstance(detail, dict) else str(detail)
        lines.append(
            f"| {name} | {entry['status']} | {entry.get('seconds', '')} | "
            f"{text.replace('|', '/')} |"
        )
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "gpu_check")
    parser.add_argument(
        "--budget-s", type=float, default=470.0, help="start no section after this many seconds"
    )
    parser.add_argument("--only", nargs="*", help="section names (prefixes) to run")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False): run "
            "`make gpu-check` on a machine with a GPU",
            file=sys.stderr,
        )
        return NO_GPU_EXIT
    started = time.perf_counter()
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "sections": {},
    }
    for name, section in SECTIONS:
        if args.only and not any(name.startswith(p) for p in args.only):
            continue
        if time.perf_counter() - started > args.budget_s:
            report["sections"][name] = {"status": "skipped (time budget)"}
            write_report(args.out, report)
            continue
        begin = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix=f"gpu_check_{name}_") as work:
                entry = {"status": "ok", "result": section(Path(work))}
        except Exception as error:  # one failed section must not stop the others
            entry = {
                "status": "failed",
                "error": f"{type(error).__name__}: {error}"[:2000],
                "traceback": traceback.format_exc()[-3000:],
            }
        entry["seconds"] = round(time.perf_counter() - begin, 1)
        report["sections"][name] = entry
        write_report(args.out, report)
        print(f"gpu_check: {name}: {entry['status']} ({entry['seconds']} s)", flush=True)
    failed = [n for n, e in report["sections"].items() if e["status"] != "ok"]
    print(
        f"gpu_check: report in {args.out}/gpu_check.md" + (f"; not ok: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
