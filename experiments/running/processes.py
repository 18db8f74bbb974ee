"""How a Hydra job gets its processes: alone, spawning ``trainer.devices`` workers itself, or
joining a group that torchrun or SLURM (submitit included) already started.

One Hydra job owns its process group, so ``-m`` sweeps and DDP compose. Under torchrun or SLURM
every process runs the Hydra job and the environment says who is who (one task per GPU).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a process group is used, not to plan a launch
    import torch

GROUP_TIMEOUT = datetime.timedelta(minutes=30)
# Rendezvous ports derived from a job id: below Linux's ephemeral range (32768-60999 by default,
# net.ipv4.ip_local_port_range), where the OS hands out ports to outgoing connections and
# would sooner or later collide with the store, and above most registered service ports.
JOB_PORT_RANGE = (20000, 32000)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class LaunchPlan:
    """``kind``: single | spawn | torchrun | slurm | submitit_local."""

    kind: str
    world_size: int
    rank: int = 0
    local_rank: int = 0
    master_addr: str = "localhost"
    master_port: int | None = None


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def port_from_job_id(job_id: str) -> int:
    """The job's rendezvous port: every task (and every requeued restart) of a job derives the
    same one without talking to the others; jobs spread over ``JOB_PORT_RANGE``."""
    low, high = JOB_PORT_RANGE
    digest = hashlib.sha256(job_id.encode()).digest()
    return low + int.from_bytes(digest[:8], "big") % (high - low)


def _slurm_plan() -> LaunchPlan | None:
    ntasks = _int_env("SLURM_NTASKS")
    if ntasks is None or ntasks <= 1 or _int_env("SLURM_PROCID") is None:
        return None
    if "SLURM_STEP_ID" not in os.environ:  # inside sbatch/salloc but not an srun task
        return None
    from submitit.slurm.slurm import SlurmJobEnvironment

    env = SlurmJobEnvironment()
    return LaunchPlan(
        kind="slurm",
        world_size=env.num_tasks,
        rank=env.global_rank,
        local_rank=env.local_rank,
        master_addr=os.environ.get("MASTER_ADDR") or env.hostnames[0],
        master_port=_int_env("MASTER_PORT") or port_from_job_id(env.job_id),
    )


def _submitit_local_plan() -> LaunchPlan | None:
    ntasks = _int_env("SUBMITIT_LOCAL_NTASKS")
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or ntasks is None or ntasks <= 1:
        return None
    return LaunchPlan(
        kind="submitit_local",
        world_size=ntasks,
        rank=int(os.environ["SUBMITIT_LOCAL_GLOBALID"]),
        local_rank=int(os.environ["SUBMITIT_LOCAL_LOCALID"]),
        master_port=port_from_job_id(os.environ.get("SUBMITIT_LOCAL_JOB_ID", "0")),
    )


def plan_launch(devices: int) -> LaunchPlan:
    """Read the environment: torchrun, then SLURM/submitit tasks, else spawn or run alone."""
    world_size = _int_env("WORLD_SIZE")
    if world_size is not None and _int_env("RANK") is not None and "LOCAL_RANK" in os.environ:
        return LaunchPlan(
            kind="torchrun",
            world_size=world_size,
            rank=int(os.environ["RANK"]),
            local_rank=int(os.environ["LOCAL_RANK"]),
            master_addr=os.environ.get("MASTER_ADDR", "localhost"),
            master_port=_int_env("MASTER_PORT"),
        )
    for plan in (_slurm_plan(), _submitit_local_plan()):
        if plan is not None:
            return plan
    if devices > 1:
        return LaunchPlan(kind="spawn", world_size=devices, master_port=free_port())
    return LaunchPlan(kind="single", world_size=1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return int(sock.getsockname()[1])


# Overrides the process-group backend (e.g. gloo for two ranks sharing one GPU in a check).
BACKEND_ENV = "AUTODROP_DIST_BACKEND"


def backend_for(device_type: str) -> str:
    forced = os.environ.get(BACKEND_ENV)
    if forced:
        return forced
    return "nccl" if device_type == "cuda" else "gloo"


def init_process_group(
    plan: LaunchPlan, rank: int, local_rank: int, device_type: str
) -> DistContext:
    """Join the job's process group (a no-op context for a single process) with the backend
    for ``device_type`` (``backend_for``)."""
    import torch.distributed as dist

    if plan.world_size == 1:
        return DistContext()
    if plan.kind == "torchrun" and dist.is_initialized():
        # The next job of a ``-m`` sweep under torchrun: the group lives for the whole launch
        # (a second init_process_group on torchrun's store hangs).
        return DistContext(rank=rank, local_rank=local_rank, world_size=plan.world_size)
    os.environ["MASTER_ADDR"] = plan.master_addr
    if plan.master_port is not None:
        os.environ["MASTER_PORT"] = str(plan.master_port)
    dist.init_process_group(
        backend=backend_for(device_type),
        rank=rank,
        world_size=plan.world_size,
        timeout=GROUP_TIMEOUT,
    )
    return DistContext(rank=rank, local_rank=local_rank, world_size=plan.world_size)


def destroy_process_group(plan: LaunchPlan | None = None) -> None:
    """Leave the job's group; under torchrun it is kept for the launch's next job."""
    import torch.distributed as dist

    if plan is not None and plan.kind == "torchrun":
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity for one process)."""
    import torch.distributed as dist

    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(ctx: DistContext) -> None:
    """Wait until every rank is here (nothing to wait for in a single process)."""
    if ctx.is_distributed:
        import torch.distributed as dist

        dist.barrier()


def sync_buffers_from_rank0(model: Any, ctx: DistContext) -> None:
    """Under DDP each rank's BatchNorm statistics drift within a forward pass; evaluate and
    checkpoint rank 0's, so the metrics describe the model that is saved."""
    if ctx.is_distributed:
        import torch.distributed as dist

        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def data_parallel(model: Any, device: Any, ctx: DistContext) -> Any:
    """``model`` wrapped in DistributedDataParallel across ranks (itself for one process).
    Checkpoints hold the bare model."""
    if not ctx.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def broadcast_object(value: Any, ctx: DistContext) -> Any:
    """Rank 0's ``value`` on every rank."""
    import torch.distributed as dist

    if not ctx.is_distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any, ctx: DistContext) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` on every rank."""
    import torch.distributed as dist

    if not ctx.is_distributed:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def _spawned_entry(
    local_rank: int, plan: LaunchPlan, worker: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    worker(plan, local_rank, local_rank, *args)


def spawn(
    plan: LaunchPlan,
    worker: Callable[..., Any],
    args: tuple[Any, ...],
    started: Callable[[list[int]], Any] | None = None,
) -> None:
    """Run ``worker(plan, rank, local_rank, *args)`` in ``plan.world_size`` new processes.

    ``worker`` and ``args`` must be picklable (module-level function, plain data).
    ``started(pids)`` is called once they run (e.g. to pass signals on to them). Raises like
    ``torch.multiprocessing.spawn`` when a worker fails, with the error of the worker that
    failed first (see ``_first_failure``).
    """
    import torch.multiprocessing as mp

    if mp.get_start_method(allow_none=True) not in (None, "spawn", "fork", "forkserver"):
        # A joblib (loky) worker's start method is "loky", which the children, plain
        # interpreters, cannot restore: give them the standard one.
        mp.set_start_method("spawn", force=True)
    context = mp.start_processes(
        _spawned_entry,
        args=(plan, worker, args),
        nprocs=plan.world_size,
        join=False,
        start_method="spawn",
    )
    try:
        if started is not None:
            started(context.pids())
        while not context.join():
            pass
    except mp.ProcessRaisedException as error:
        raise _first_failure(context, error) from None
    finally:
        for path in context.error_files:  # torch leaves them in the temp folder
            with contextlib.suppress(OSError):
                os.unlink(path)


def _first_failure(context: Any, reported: Any) -> Any:
    """torch reports the failed worker it notices first, often one that failed only because
    another did (a peer closed the connection); the cause is the worker whose error (the
    traceback torch has each failed worker write to its own file) was written first."""
    import torch.multiprocessing as mp

    written = []
    for rank, path in enumerate(context.error_files):
        with contextlib.suppress(OSError):
            written.append((os.stat(path).st_mtime_ns, rank, path))
    if not written or min(written)[1] == reported.error_index:
        return reported
    _, rank, path = min(written)
    with open(path, "rb") as handle:
        trace = pickle.load(handle)  # torch's own protocol: one pickled string
    message = f"\n\n-- Process {rank:d} terminated with the following error:\n{trace}"
    return mp.ProcessRaisedException(message, rank, context.processes[rank].pid)
