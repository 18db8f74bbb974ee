"""What HD, TLR (reconstruction) and schedule-free SGD cost per optimizer step, beside AutoDrop.

One run on the CIFAR ResNet-18 parameter set (11.2M parameters, fixed random gradients): each
method's time per optimizer step minus that of plain SGD (momentum 0.9, Nesterov, weight decay
5e-4), as a fraction of one full training step (batch 128, forward + backward + SGD step).

- HD: ``SGDHD.step()`` vs ``torch.optim.SGD.step()`` (the hypergradient dot product).
- TLR: ``SGD.step()`` + ``TrainableLR.step()`` vs ``SGD.step()`` (its two dot products and
  direction copy; the once-per-gap update is one host sync every 0.33 epoch, not timed).
- schedule-free: ``SGDScheduleFree.step()`` vs ``SGD.step()``; its per-epoch BatchNorm pass
  (50 forward passes over 391 steps at batch 128) is estimated from a timed forward pass.
- AutoDrop: ``AutoDrop.step()`` over one whole window of 64 steps (as scripts.bench_autodrop).

    python -m scripts.bench_baselines [--device cpu|cuda] [--train-steps 2] [--steps 5]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import models
from autodrop.batchnorm import BN_PASS_BATCHES
from autodrop.hd import SGDHD
from autodrop.registry import build
from experiments.optimizers import build_schedulefree_sgd
from scripts.bench_autodrop import time_schedule, time_training_step, timed

STEPS_PER_EPOCH = 391  # CIFAR at batch 128
SGD_SETTINGS = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)


def with_random_gradients(model: nn.Module) -> list[nn.Parameter]:
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p).mul_(1e-3)
    return params


def method_step_times(model: nn.Module, device: torch.device, steps: int) -> dict[str, float]:
    """Seconds per optimizer step of SGD and of each method (the same fixed gradients)."""
    params = with_random_gradients(model)
    sgd = torch.optim.SGD(params, **SGD_SETTINGS)
    hd = SGDHD(params, beta=1e-4, **SGD_SETTINGS)
    tlr_sgd = torch.optim.SGD(params, **SGD_SETTINGS)
    tlr = build("tlr", tlr_sgd, steps_per_epoch=STEPS_PER_EPOCH, epochs=200)
    schedule_free = build_schedulefree_sgd(
        params,
        base_lr=0.05,
        steps_per_epoch=STEPS_PER_EPOCH,
        lr_multiplier=10.0,
        weight_decay=5e-4,
        warmup_epochs=5.0,
    )
    schedule_free.train()

    def tlr_step() -> None:
        tlr_sgd.step()
        tlr.step()

    return {
        "sgd": timed(sgd.step, steps, device),
        "hd": timed(hd.step, steps, device),
        "tlr": timed(tlr_step, steps, device),
        "schedulefree": timed(schedule_free.step, steps, device),
    }


def forward_time(model: nn.Module, device: torch.device, batch: int, steps: int) -> float:
    """Seconds per training-mode forward pass without gradients (the BatchNorm pass)."""
    x = torch.randn(batch, 3, 32, 32, device=device)
    model.train()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    return timed(forward, steps, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train-steps", type=int, default=2, help="timed training steps")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per method")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = models.build_model("resnet18", 10).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    train_step = time_training_step(model, device, 128, args.train_steps)
    forward = forward_time(model, device, 128, args.train_steps)
    times = method_step_times(model, device, args.steps)
    # One window of 64 steps (13 * 5 = 65 schedule steps), so its periodic work is included.
    autodrop, _ = time_schedule("autodrop", model, device, 13, window=64)

    print(
        f"device={device} threads={torch.get_num_threads()} ResNet-18 CIFAR: "
        f"{n_params:,} parameters; timed: {args.train_steps} training steps, "
        f"{args.steps} optimizer steps per method"
    )
    print(f"full training step (batch 128, fwd+bwd+SGD): {train_step * 1e3:.1f} ms")
    print(f"SGD step alone: {times['sgd'] * 1e3:.2f} ms")
    print(f"{'method':<44}{'added ms/step':>14}{'% of train step':>17}")
    bn_pass = BN_PASS_BATCHES * forward / STEPS_PER_EPOCH
    rows = [
        ("AutoDrop (window 64, step())", autodrop),
        ("HD (SGDN-HD step - SGD step)", times["hd"] - times["sgd"]),
        ("TLR (reconstruction) (step() + SGD - SGD)", times["tlr"] - times["sgd"]),
        ("schedule-free (step - SGD step)", times["schedulefree"] - times["sgd"]),
        ("schedule-free BN pass (50 fwd / 391 steps)", bn_pass),
    ]
    for label, added in rows:
        print(f"{label:<44}{added * 1e3:>14.3f}{100 * added / train_step:>16.2f}%")


if __name__ == "__main__":
    main()
