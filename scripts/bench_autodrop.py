"""What AutoDrop costs per optimizer step, measured beside a real ResNet-18 training step.

Prints, from one run on the CIFAR ResNet-18 parameter set (11.2M parameters): the time each
schedule's step() adds per optimizer step (averaged over whole measurement windows / epochs, so
the periodic work is included) as a fraction of one full training step (batch 128, forward +
backward + SGD step), and each schedule's extra memory as a multiple of the parameter bytes.

    python -m scripts.bench_autodrop [--device cpu|cuda] [--train-steps 3]
"""

from __future__ import annotations

import argparse
import time

import torch

import models
from autodrop.registry import build


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, steps: int, device: torch.device) -> float:
    """Seconds per call of ``step``, after one warm-up call (allocations, cudnn autotune)."""
    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def time_training_step(model, device, batch, steps) -> float:
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def one_step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return timed(one_step, steps, device)


def held_tensor_bytes(schedule) -> int:
    """Bytes of every tensor the schedule holds (its state dict), counted once each."""
    seen, total = set(), 0
    for value in schedule.state_dict().values():
        for tensor in value if isinstance(value, list) else [value]:
            if isinstance(tensor, torch.Tensor) and id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def time_schedule(name, model, device, steps_per_epoch, **options):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    schedule = build(name, opt, steps_per_epoch=steps_per_epoch, epochs=200, **options)
    opt.step()  # no gradients: changes nothing, but tells torch the optimizer has stepped
    # Five epochs: AutoDropV1 needs three snapshots and one more epoch before it can arm.
    steps = 5 * steps_per_epoch
    with torch.no_grad():
        for p in model.parameters():  # parameters must move for the angles to be defined
            p.add_(torch.randn_like(p), alpha=1e-3)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        if i % 8 == 0:
            with torch.no_grad():
                next(model.parameters()).add_(1e-4)
        schedule.step()
    sync(device)
    elapsed = (time.perf_counter() - start) / steps
    return elapsed, held_tensor_bytes(schedule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=391, help="CIFAR at batch 128")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = models.build_model("resnet18", 10).to(device)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    train_step = time_training_step(model, device, 128, args.train_steps)

    print(
        f"device={device} threads={torch.get_num_threads()} "
        f"ResNet-18 CIFAR: {n_params:,} parameters ({param_bytes / 2**20:.1f} MiB)"
    )
    print("held buffers = bytes of the tensors in the schedule's state, / parameter bytes")
    print(f"full training step (batch 128, fwd+bwd+SGD): {train_step * 1e3:.1f} ms")
    print(f"{'schedule':<28}{'step() ms':>11}{'% of train step':>17}{'held buffers':>14}")
    cases = [
        ("step", "step", {}),
        ("autodrop (window 64)", "autodrop", {"window": 64}),
        ("autodrop_v1 (not armed)", "autodrop_v1", {}),
        ("autodrop_v1 (armed)", "autodrop_v1", {"theta": 180.0}),
    ]
    for label, name, options in cases:
        per_step, held = time_schedule(name, model, device, args.steps_per_epoch, **options)
        print(
            f"{label:<28}{per_step * 1e3:>11.3f}{100 * per_step / train_step:>16.3f}%"
            f"{held / param_bytes:>13.2f}x"
        )


if __name__ == "__main__":
    main()
