"""Device-resident loader vs the classic DataLoader path, measured side by side in one run.

On synthetic CIFAR-sized uint8 images (no dataset files needed), built through the same loader
classes ``build_data`` uses, it prints:
1. images/second of each loader (augmentation on, batch 128), classic with each worker count
   given, and the ratio device / fastest classic (target >= 5x);
2. seconds per epoch of ``models.build_model("resnet8", 10)`` training (SGD, batch 128) fed by
   each loader, as a ratio to the floor: the same loop over batches staged in memory beforehand
   (target: device within 5 % of the floor). The floor, the device loader and the classic loader
   without workers take turns of a few steps within the same epochs, so that load from other
   processes hits them alike; classic loaders with workers run alone (they prefetch).

    python -m scripts.bench_data [--images 10000] [--epochs 1] [--rounds 1] [--workers 0 2]
    python -m scripts.bench_data --imagenet [--jpegs 512] [--workers 0 2] [--rounds 3]

With ``--imagenet`` it measures instead the ImageNet JPEG pipeline with uint8 worker output
(normalised on the device) against float32 worker output, side by side, and prints the ratio.

On a CPU the training process runs with 1 torch thread unless ``--threads`` says otherwise
(DataLoader workers use 1 each anyway): on a shared machine busier than its cores, every OpenMP
parallel region waits for descheduled threads, which swamps the device loader's small per-batch
ops and makes the timings erratic.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import torch

import models
from experiments.data.arrays import ArraySplits, ImageArrays
from experiments.data.build import build_array_bundle
from experiments.data.bundle import TrainLoader
from experiments.data.cifar import CIFAR_PADDING
from experiments.data.loading import Loading
from experiments.data.normalization import CIFAR_MEAN, CIFAR_STD

NUM_CLASSES = 10
WARMUP_STEPS = 3
CHUNK_STEPS = 4
Batch = tuple[torch.Tensor, torch.Tensor]


def synthetic_cifar(num_images: int, seed: int) -> ArraySplits:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_images, 3, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (num_images,), generator=gen)
    split = ImageArrays(images, labels)
    return ArraySplits(split, split, NUM_CLASSES, CIFAR_MEAN, CIFAR_STD, CIFAR_PADDING)


def make_loader(splits, loader: str, workers: int, args) -> TrainLoader:
    settings = Loading(
        loader=loader,
        batch_size=args.batch_size,
        eval_batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        num_workers=workers,
    )
    bundle = build_array_bundle(splits, settings, name="synthetic")
    return bundle.train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_epochs(run_epoch: Callable[[int], None], epochs: int, device: torch.device) -> float:
    """Seconds per epoch over epochs 1..epochs (epoch 0 is never timed)."""
    sync(device)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        run_epoch(epoch)
    sync(device)
    return (time.perf_counter() - start) / epochs


def loader_epoch_seconds(loader: TrainLoader, args) -> float:
    """Seconds to iterate one epoch of ``loader`` (after a few warm-up batches)."""
    loader.set_epoch(0)
    for step, _ in enumerate(loader):  # warm-up: starts persistent workers, fills caches
        if step + 1 == WARMUP_STEPS:
            break

    def run_epoch(epoch: int) -> None:
        loader.set_epoch(epoch)
        for images, _ in loader:
            images.data_ptr()

    return timed_epochs(run_epoch, args.epochs, torch.device(args.device))


def best_of(rounds: int, measurements: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run every measurement once per round, interleaved, and keep the minimum of each."""
    best = dict.fromkeys(measurements, math.inf)
    for _ in range(rounds):
        for name, measure in measurements.items():
            best[name] = min(best[name], measure())
    return best


class Trainer:
    """resnet8 + SGD, reset to the same initial state before every measurement."""

    def __init__(self, device: torch.device, seed: int) -> None:
        torch.manual_seed(seed)
        self.device = device
        self.model = models.build_model("resnet8", NUM_CLASSES).to(device)
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.optimizer: torch.optim.Optimizer | None = None

    def reset(self) -> None:
        self.model.load_state_dict(self.initial)
        self.model.train()
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
        )

    def train(self, batches: Iterable[Batch]) -> list[float]:
        """Seconds of every step, each counted from the end of the previous one (so the wait
        for the batch is included)."""
        durations = []
        sync(self.device)
        last = time.perf_counter()
        for images, labels in batches:
            self.optimizer.zero_grad(set_to_none=True)
            self.loss_fn(self.model(images), labels).backward()
            self.optimizer.step()
            sync(self.device)
            now = time.perf_counter()
            durations.append(now - last)
            last = now
        return durations


def _epoch_batches(loader: TrainLoader | None, staged: list[Batch], epoch: int):
    if loader is None:
        return staged
    loader.set_epoch(epoch)
    return loader


def interleaved_epoch_seconds(trainer, feeds, staged, args) -> dict[str, float]:
    """Seconds per epoch of each synchronous feed, trained in turns of ``CHUNK_STEPS`` steps so
    that other processes' load hits every feed alike."""
    trainer.reset()
    totals = dict.fromkeys(feeds, 0.0)
    for epoch in range(args.epochs + 1):  # epoch 0 warms up and is not counted
        running = {name: iter(_epoch_batches(ld, staged, epoch)) for name, ld in feeds.items()}
        while running:
            for name, batches in list(running.items()):
                durations = trainer.train(itertools.islice(batches, CHUNK_STEPS))
                totals[name] += sum(durations) if epoch else 0.0
                if len(durations) < CHUNK_STEPS:
                    del running[name]
    return {name: total / args.epochs for name, total in totals.items()}


def whole_epoch_seconds(trainer, loader: TrainLoader, args) -> float:
    """Seconds per epoch fed by ``loader`` alone (for loaders with background workers, whose
    prefetching would make turn-taking unfair), best of ``args.rounds``."""
    best = math.inf
    for _ in range(args.rounds):
        trainer.reset()
        trainer.train(itertools.islice(_epoch_batches(loader, [], 0), WARMUP_STEPS))
        times = [
            sum(trainer.train(_epoch_batches(loader, [], e))) for e in range(1, args.epochs + 1)
        ]
        best = min(best, sum(times) / args.epochs)
    return best


def compare_training(trainer, device_loader, classic, loader_alone: float, args) -> None:
    """Print the training table; ``loader_alone`` is the device loader's own s/epoch."""
    device_loader.set_epoch(1)
    staged = [(x.clone(), y.clone()) for x, y in device_loader]
    floor = "pre-staged tensors (floor)"
    feeds = {floor: None, "device loader": device_loader}
    feeds.update({f"classic loader, {n} workers": ld for n, ld in classic.items() if n == 0})
    seconds = interleaved_epoch_seconds(trainer, feeds, staged, args)
    for workers in (n for n in classic if n > 0):
        name = f"classic loader, {workers} workers *"
        seconds[name] = whole_epoch_seconds(trainer, classic[workers], args)
    print(f"Training resnet8 (SGD, batch {args.batch_size}), one epoch = {len(staged)} steps")
    print(f"  {'fed by':<36}{'s/epoch':>9}{'vs floor':>10}")
    for feed, value in seconds.items():
        print(f"  {feed:<36}{value:>9.2f}{value / seconds[floor]:>9.3f}x")
    print(
        f"  rows without * took turns of {CHUNK_STEPS} steps in the same epochs; rows with * "
        "ran alone (their workers prefetch)"
    )
    overhead = seconds["device loader"] / seconds[floor] - 1
    verdict = "met" if overhead <= 0.05 else "NOT met"
    print(f"  device loader vs floor: {overhead:+.1%} (target <= +5%: {verdict})")
    print(
        f"  the device loader alone takes {loader_alone:.3f} s per epoch: "
        f"{loader_alone / seconds[floor]:.2%} of a floor epoch"
    )


def imagenet_epoch_seconds(bundle, epoch: int, device: torch.device) -> float:
    bundle.train.set_epoch(epoch)
    sync(device)
    start = time.perf_counter()
    for images, _ in bundle.train:
        assert images.dtype == torch.float32  # normalised, whatever the workers shipped
    sync(device)
    return time.perf_counter() - start


def write_jpeg_folder(
    root: Path, classes: int = 8, per_class: int = 256, size: tuple[int, int] = (500, 375)
) -> None:
    """Natural-looking (smooth) JPEGs, by default 500x375, about the size of ImageNet's
    average photo."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 16)):
        for k in range(classes):
            folder = root / split / f"n{1440764 + k:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
                image = Image.fromarray(small).resize(size, Image.BICUBIC)
                image.save(folder / f"img_{i}.JPEG", quality=90)


def compare_imagenet_outputs(args) -> None:
    """uint8 vs float32 ImageNet worker output, side by side, on a folder of JPEGs."""
    import tempfile

    from experiments.data.datasets import imagenet
    from experiments.data.imagenet import build_imagenet

    device = torch.device(args.device)
    per_class = max(1, args.jpegs // 8)
    with tempfile.TemporaryDirectory(prefix="bench_imagenet_") as root:
        write_jpeg_folder(Path(root), classes=8, per_class=per_class)
        images = 8 * per_class
        print(
            f"{images} JPEGs of 500x375 (8 classes), RandomResizedCrop 224 + flip, batch "
            f"{args.batch_size}, device {device}, best of {args.rounds} round(s), load "
            f"average {os.getloadavg()[0]:.1f}\n"
        )
        rows = {}
        for workers in args.workers:
            settings = Loading(
                loader="classic",
                batch_size=args.batch_size,
                eval_batch_size=args.batch_size,
                device=device,
                seed=args.seed,
                num_workers=workers,
            )
            bundles = {
                output: build_imagenet(imagenet(root), settings, output=output)
                for output in ("uint8", "float32")
            }
            for bundle in bundles.values():
                imagenet_epoch_seconds(bundle, 0, device)  # start the persistent workers
            best = {output: math.inf for output in bundles}
            for round_index in range(args.rounds):
                for output, bundle in bundles.items():  # interleaved: load hits both alike
                    seconds = imagenet_epoch_seconds(bundle, round_index + 1, device)
                    best[output] = min(best[output], seconds)
            rows[workers] = {output: images / value for output, value in best.items()}
    batch_mb = {"uint8": 1, "float32": 4}
    print("ImageNet worker output (images/s through the loader, normalised on the device)")
    print(f"  {'workers':<9}{'uint8':>10}{'float32':>10}{'uint8 / float32':>18}{'MB/batch':>16}")
    for workers, rates in rows.items():
        mb = [args.batch_size * 3 * 224 * 224 * batch_mb[o] / 2**20 for o in ("uint8", "float32")]
        print(
            f"  {workers:<9}{rates['uint8']:>10,.0f}{rates['float32']:>10,.0f}"
            f"{rates['uint8'] / rates['float32']:>17.2f}x{mb[0]:>8.1f} / {mb[1]:.1f}"
        )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="synthetic train images")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per measurement")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="classic worker counts to try"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: 1 on CPU, see above)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved repetitions; the best one is shown"
    )
    parser.add_argument("--skip-training", action="store_true", help="loader throughput only")
    parser.add_argument(
        "--imagenet",
        action="store_true",
        help="instead: ImageNet JPEG pipeline, uint8 vs float32 worker output side by side",
    )
    parser.add_argument("--jpegs", type=int, default=512, help="JPEGs written for --imagenet")
    args = parser.parse_args(argv)
    for name in ("images", "epochs", "batch_size", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if min(args.workers) < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    if args.imagenet:
        compare_imagenet_outputs(args)
        return
    splits = synthetic_cifar(args.images, args.seed)
    print(
        f"{args.images:,} synthetic 32x32 images, batch {args.batch_size}, augmentation on, "
        f"device {device}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"{args.epochs} timed epoch(s) per row, best of {args.rounds} round(s), "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )

    classic = {n: make_loader(splits, "classic", n, args) for n in args.workers}
    device_loader = make_loader(splits, "device", 0, args)
    loaders = {"device": device_loader}
    loaders.update({f"classic, {n} workers": loader for n, loader in classic.items()})
    seconds = best_of(
        args.rounds, {path: partial(loader_epoch_seconds, ld, args) for path, ld in loaders.items()}
    )
    rates = {path: args.images / value for path, value in seconds.items()}
    best_workers = max(args.workers, key=lambda n: rates[f"classic, {n} workers"])
    best_classic = rates[f"classic, {best_workers} workers"]
    print("Loader throughput")
    print(f"  {'path':<26}{'images/s':>12}{'vs fastest classic':>22}")
    for path, rate in rates.items():
        print(f"  {path:<26}{rate:>12,.0f}{rate / best_classic:>21.2f}x")
    ratio = rates["device"] / best_classic
    verdict = "met" if ratio >= 5 else "NOT met"
    print(
        f"  device / fastest classic ({best_workers} workers) = {ratio:.1f}x "
        f"(target >= 5x: {verdict})\n"
    )
    if args.skip_training:
        return

    loader_alone = seconds["device"]
    compare_training(Trainer(device, args.seed), device_loader, classic, loader_alone, args)


if __name__ == "__main__":
    main()
