"""Parameter trajectories for driving the AutoDrop schedulers without a model."""

from __future__ import annotations

import math

import torch

SHAPES = [(3, 4), (5,), (2, 2, 2)]  # several tensors of different shapes: 25 numbers in all
DIM = sum(math.prod(s) for s in SHAPES)


def noisy_quadratic(steps: int, seed: int, dim: int = DIM, lr: float = 0.05) -> list[torch.Tensor]:
    """SGD on a noisy quadratic: angles rise, then saturate, like a real training run."""
    g = torch.Generator().manual_seed(seed)
    curvature = torch.linspace(0.1, 2.0, dim, dtype=torch.float64)
    x = torch.randn(dim, generator=g, dtype=torch.float64) * 5
    out = []
    for _ in range(steps):
        noise = torch.randn(dim, generator=g, dtype=torch.float64) / curvature.sqrt()
        x = x - lr * curvature * (x - noise)
        out.append(x.float().double())  # the library stores float32 parameters
    return out


def from_angles(angles_deg: list[float], step_length: float = 1.0) -> list[torch.Tensor]:
    """A 2-D path (padded to DIM) whose consecutive steps turn by exactly the given angles.

    Position k is the sum of the first k steps; step k+1 is step k rotated by angles_deg[k].
    Driven with window=1, the window means are the positions, so omega_i = angles_deg[i-2].
    """
    heading = 0.0
    position = torch.zeros(DIM, dtype=torch.float64)
    path = [position.clone()]
    for turn in [0.0, *angles_deg]:
        heading += math.radians(turn)
        position = position.clone()
        position[0] += step_length * math.cos(heading)
        position[1] += step_length * math.sin(heading)
        path.append(position)
    return [p.float().double() for p in path]


def make_params(lr: float, groups: int = 1) -> tuple[list[torch.nn.Parameter], torch.optim.SGD]:
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    if groups == 1:
        opt = torch.optim.SGD(params, lr=lr)
    else:
        opt = torch.optim.SGD(
            [{"params": params[:1], "lr": lr}, {"params": params[1:], "lr": lr * 10}]
        )
    return params, opt


@torch.no_grad()
def write(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def read(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in params])


def drive(scheduler, params, trajectory) -> dict:
    """Set the parameters to each point in turn, step the scheduler, record what it does."""
    lrs, after = [], {}
    for t, x in enumerate(trajectory, start=1):
        write(params, x)
        scheduler.step()
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        after[t] = read(params)
    return {"lrs": lrs, "drops": list(scheduler.drop_steps), "params_after": after}
