"""How jobs run, beside what they train: the concerns the training path reaches only through
small hooks (``experiments.job`` calls them).

- ``launch``: spawning one process per device or GPU slot, and joining torchrun/SLURM;
- ``processes``: the launch plan (rank, world size) and the process group;
- ``gpu_slots``: several single-GPU jobs of a sweep sharing the visible GPUs;
- ``preemption``: SIGTERM/SIGUSR1 and SLURM's hand-over (save, requeue, exit);
- ``stopped_epoch``: resuming mid-epoch where the interrupted run stopped;
- ``sync_batchnorm``: BatchNorm statistics across processes;
- ``refused_launch``: a launch refused before training leaves no run directory behind.
"""
