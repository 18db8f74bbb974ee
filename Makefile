# AutoDrop benchmark suite. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed

# make reproduce knobs
LAUNCHER     ?= local
GPUS         ?= 1
GPUS_PER_RUN ?= 1
DATA_DIR ?= data
SEEDS    ?= 0,1,2,3
RESULTS  ?= results

CIFAR_TASKS    := resnet18_cifar10 wrn28_10_cifar10 resnet34_cifar100 wrn40_10_cifar100
IMAGENET_TASKS := resnet18_imagenet resnet50_imagenet
PAPER_TASKS    := $(CIFAR_TASKS) $(IMAGENET_TASKS)
PAPER_SCHEDULES := autodrop,autodrop_v1,step,cosine,onecycle,clr,exp,tlr
# Grid-searched baselines, one sweep each (Table 2 shows each task's best setting):
# HD's hypergradient lr (the paper's grid) and schedule-free's lr multiplier (BASELINES.md §3.6).
PAPER_GRIDS := "scheduler=$(PAPER_SCHEDULES)" \
               "scheduler=hd optimizer.beta=1e-3,1e-4,1e-5" \
               "scheduler=schedulefree optimizer.lr_multiplier=10,20,50"
QUICK_SCHEDULES := autodrop,autodrop_v1,step,cosine,onecycle
# Five paired seeds: the fewest from which the paired statistics mark a difference.
QUICK_SEEDS     := 0,1,2,3,4
LR_SENSITIVITY_SEEDS := 0,1,2
# make quick writes its tables and figures here (git-ignored); make quick-update writes them to
# the committed reference output $(RESULTS)/quick/ instead. Runs always go to $(RESULTS)/runs/.
QUICK_OUT       ?= $(RESULTS)/local/quick
# quick/* runs use one torch thread each: two jobs at once fill this 2-core class of machine.
QUICK_JOBS      := 2
QUICK_PARALLEL  := hydra/launcher=joblib hydra.launcher.n_jobs=$(QUICK_JOBS)
# local: this node's GPUS GPUs. CIFAR runs GPUS_PER_RUN GPUs each, GPUS/GPUS_PER_RUN at once
# (hydra/launcher=gpus: a GPU slot per job); ImageNet runs one at a time with DDP over all GPUS.
# slurm: one SLURM job per run, with GPUS_PER_RUN (CIFAR) or GPUS (ImageNet) GPUs.
LAUNCH_CIFAR_local    := hydra/launcher=gpus trainer.gpu_slots=$(GPUS) trainer.devices=$(GPUS_PER_RUN)
LAUNCH_IMAGENET_local := trainer.devices=$(GPUS)
LAUNCH_CIFAR_slurm    := hydra/launcher=slurm trainer.devices=$(GPUS_PER_RUN)
LAUNCH_IMAGENET_slurm := hydra/launcher=slurm trainer.devices=$(GPUS)
TRAIN := $(PY) -m experiments.train
# make status / make reproduce DRY_RUN=1: the grids above, as scripts.status reads them.
STATUS       := $(PY) -m scripts.status --runs $(RESULTS)/runs
STATUS_paper  = $(STATUS) --experiments $(addprefix paper/,$(PAPER_TASKS)) --grid $(PAPER_GRIDS) \
                  --seeds $(SEEDS) --gpus $(GPUS)
STATUS_quick  = $(STATUS) --experiments quick/fixed_lr --gpus $(QUICK_JOBS) && \
                $(STATUS) --experiments quick/digits --grid "scheduler=$(QUICK_SCHEDULES)" \
                  --seeds $(QUICK_SEEDS) --gpus $(QUICK_JOBS)
STATUS_lr-sensitivity = $(STATUS) --experiments ablation/lr_sensitivity \
                  --grid "scheduler=$(QUICK_SCHEDULES)" --seeds $(LR_SENSITIVITY_SEEDS) --gpus $(QUICK_JOBS)

.PHONY: help install test test-fast lint format bench faults gpu-check quick quick-update reproduce ablations lr-sensitivity status tables figures wandb-sync clean

help: ## Show this help
	@echo "AutoDrop benchmark suite. Targets:"
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'
	@echo "Variables: LAUNCHER=local|slurm GPUS=N GPUS_PER_RUN=N DATA_DIR=path SEEDS=0,1,2,3 RESULTS=dir DRY_RUN=1"

$(STAMP): pyproject.toml
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[suite,dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the pinned environment (torch 2.14.1, Hydra, wandb, ...)

test: $(STAMP) ## Run the whole test suite (fast and slow tests; ~16 min on 2 CPU cores)
	WANDB_MODE=disabled $(PY) -m pytest

test-fast: $(STAMP) ## Run the fast tests only (skip end-to-end runs)
	WANDB_MODE=disabled $(PY) -m pytest -m "not slow"

lint: $(STAMP) ## Lint with ruff
	$(PY) -m ruff check .

format: $(STAMP) ## Format with ruff
	$(PY) -m ruff format .

bench: $(STAMP) ## Benchmarks: AutoDrop / HD / TLR / schedule-free overhead, launches per step, data loader throughput
	$(PY) -m scripts.bench_autodrop
	$(PY) -m scripts.bench_baselines
	$(PY) -m scripts.bench_launches
	$(PY) -m scripts.bench_data

faults: $(STAMP) ## Fault-injection campaign on real training runs (~15 min on 2 CPU cores)
	$(PY) -m tests.fault_campaign

gpu-check: $(STAMP) ## Check and measure the GPU path on this machine's GPU (<= 8 min) -> results/gpu_check/
	$(PY) -m tests.gpu_check --out $(RESULTS)/gpu_check

quick: $(STAMP) ## CPU-sized grid on the embedded digits data, both protocols -> results/local/quick/ (minutes)
	$(PY) -m scripts.figures theory --out $(QUICK_OUT)/figures
	$(TRAIN) -m experiment=quick/fixed_lr paths.results_dir=$(RESULTS) logger=none $(QUICK_PARALLEL)
	$(TRAIN) -m experiment=quick/digits scheduler=$(QUICK_SCHEDULES) seed=$(QUICK_SEEDS) paths.results_dir=$(RESULTS) logger=none $(QUICK_PARALLEL)
	$(PY) -m scripts.aggregate --runs $(RESULTS)/runs --experiment quick --out $(QUICK_OUT)
	$(PY) -m scripts.figures curves --runs $(RESULTS)/runs --experiment quick --out $(QUICK_OUT)/figures
	@# Both protocols: the paper's (table2) and the honest one (table2_honest, time_to_target).
	@for table in table2 table2_honest time_to_target; do \
	  if [ -f $(QUICK_OUT)/tables/$$table.md ]; then echo; cat $(QUICK_OUT)/tables/$$table.md; fi; \
	done
	@echo; echo "tables and figures in $(QUICK_OUT)/ (make quick-update refreshes the committed $(RESULTS)/quick/)"

quick-update: $(STAMP) ## make quick, then rewrite the committed reference output results/quick/
	$(MAKE) quick QUICK_OUT=$(RESULTS)/quick

reproduce: $(STAMP) ## Full paper grid (Table 2 tasks x schedules x seeds), then tables and figures (DRY_RUN=1: list and estimate only)
ifeq ($(DRY_RUN),1)
	$(STATUS_paper) --dry-run
else
	@# A sweep with a diverged run (expected at the top of the HD grid) exits non-zero: carry on
	@# with the other sweeps, draw the tables (which list failed runs), then report the failure.
	status=0; for task in $(PAPER_TASKS); do for grid in $(PAPER_GRIDS); do \
	  case $$task in *imagenet) launch="$(LAUNCH_IMAGENET_$(LAUNCHER))";; *) launch="$(LAUNCH_CIFAR_$(LAUNCHER))";; esac; \
	  $(TRAIN) -m experiment=paper/$$task $$grid seed=$(SEEDS) \
	    paths.data_dir=$(DATA_DIR) paths.results_dir=$(RESULTS) $$launch \
	    || status=1; \
	done; done; \
	$(MAKE) tables figures PRESET=paper && exit $$status
endif

ablations: $(STAMP) ## The paper's window / buffer / rho ablations (ResNet-18 CIFAR-10)
	set -e; for grid in window buffer_size rho; do \
	  $(TRAIN) -m experiment=ablation/$$grid seed=$(SEEDS) \
	    paths.data_dir=$(DATA_DIR) paths.results_dir=$(RESULTS) $(LAUNCH_CIFAR_$(LAUNCHER)); \
	done
	$(MAKE) tables PRESET=paper

lr-sensitivity: $(STAMP) ## Each quick schedule at lr x {1/4,1/2,1,2,4} on digits (75 runs, ~25 min) -> results/quick/lr_sensitivity/
	$(TRAIN) -m experiment=ablation/lr_sensitivity scheduler=$(QUICK_SCHEDULES) seed=$(LR_SENSITIVITY_SEEDS) \
	  paths.results_dir=$(RESULTS) logger=none $(QUICK_PARALLEL)
	$(PY) -m scripts.aggregate --runs $(RESULTS)/runs --experiment ablation/lr_sensitivity --out $(RESULTS)/quick/lr_sensitivity
	$(PY) -m scripts.figures summary --runs $(RESULTS)/runs --experiment ablation/lr_sensitivity --out $(RESULTS)/quick/lr_sensitivity/figures

PRESET ?= paper
NO_GRID = echo "PRESET=$(PRESET) has no grid: use paper, quick or lr-sensitivity" >&2; exit 2
status: $(STAMP) ## Grid status: finished/running/stale/failed/diverged/missing and compute left (PRESET=paper|quick|lr-sensitivity, GPUS=N)
	$(or $(STATUS_$(PRESET)),$(NO_GRID))

tables: $(STAMP) ## Aggregate runs into the paper's tables (PRESET=paper|quick)
	$(PY) -m scripts.aggregate --runs $(RESULTS)/runs --experiment $(PRESET) --out $(RESULTS)/$(PRESET)

figures: $(STAMP) ## Draw every figure from the runs (PRESET=paper|quick)
	$(PY) -m scripts.figures theory --out $(RESULTS)/$(PRESET)/figures
	$(PY) -m scripts.figures curves --runs $(RESULTS)/runs --experiment $(PRESET) --out $(RESULTS)/$(PRESET)/figures

wandb-sync: $(STAMP) ## Upload runs that were logged offline (needs WANDB_API_KEY and network)
	@echo "looking for offline wandb runs under $(RESULTS)/runs (RESULTS=<dir> looks elsewhere)"; \
	found=$$(find $(RESULTS)/runs -type d -name 'offline-run-*' 2>/dev/null); \
	if [ -z "$$found" ]; then echo "no offline wandb runs under $(RESULTS)/runs"; \
	else echo "$$(echo "$$found" | wc -l) offline runs found"; $(VENV)/bin/wandb sync $$found; fi

.PHONY: wandb-upload
wandb-upload: $(STAMP) ## Log finished runs to W&B from their records (EXPERIMENT=prefix, DRY_RUN=1: list only)
	$(PY) -m scripts.wandb_upload --runs $(RESULTS)/runs $(if $(EXPERIMENT),--experiment $(EXPERIMENT)) \
	  $(if $(PROJECT),--project $(PROJECT)) $(if $(ENTITY),--entity $(ENTITY)) $(if $(filter 1,$(DRY_RUN)),--dry-run)

clean: ## Remove caches (keeps .venv and results)
	rm -rf .pytest_cache .ruff_cache outputs multirun
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
