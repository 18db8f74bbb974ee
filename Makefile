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
QUICK_SCHEDULES ?= autodrop,autodrop_v1,step,cosine,onecycle
# Five paired seeds: the fewest from which the paired statistics mark a difference.
QUICK_SEEDS     ?= 0,1,2,3,4
LR_SENSITIVITY_SEEDS ?= 0,1,2
# Added to every quick and lr-sensitivity run, e.g. "data.image_size=8 trainer.epochs=2" (tests
# shrink the grids so); like any override of a run-defining value, it is in the run's name.
QUICK_OVERRIDES ?=
# Tables and figures go to a git-ignored folder, $(RESULTS)/local/<preset>/ (OUT=<dir> picks
# another), so running a target never changes the committed reference output. The *-update
# targets rewrite that output ($(RESULTS)/<preset>/): built whole in $(UPDATE_DIR), then put in
# place of the committed folder, so no stale file stays beside new ones.
LOCAL       := $(RESULTS)/local
OUT         ?= $(LOCAL)/$(PRESET)
UPDATE_DIR  := $(LOCAL)/update
LR_SENSITIVITY_OUT ?= $(LOCAL)/quick/lr_sensitivity
LR_SENSITIVITY_REF := $(RESULTS)/quick/lr_sensitivity
# $(call publish,<built folder>,<committed folder>): the committed folder becomes a copy of the
# built one (copied beside it first, so a failed copy leaves the committed folder as it was).
publish = rm -rf "$(2).new" && mkdir -p "$(dir $(2))" && cp -R "$(1)" "$(2).new" && \
          rm -rf "$(2)" && mv "$(2).new" "$(2)" && echo "rewrote $(2)/ from $(1)/"
# DRY_RUN=1: grid targets list what they would train, output targets what they would write;
# nothing is launched or written.
DRY := $(filter 1,$(DRY_RUN))
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
                  --seeds $(SEEDS) --gpus $(GPUS) --data-dir $(DATA_DIR)
STATUS_quick  = $(STATUS) --launch "experiment=quick/fixed_lr $(QUICK_OVERRIDES)" \
                  --launch "experiment=quick/digits scheduler=$(QUICK_SCHEDULES) seed=$(QUICK_SEEDS) $(QUICK_OVERRIDES)" \
                  --gpus $(QUICK_JOBS)
STATUS_lr-sensitivity = $(STATUS) --experiments ablation/lr_sensitivity \
                  --grid "scheduler=$(QUICK_SCHEDULES) $(QUICK_OVERRIDES)" --seeds $(LR_SENSITIVITY_SEEDS) --gpus $(QUICK_JOBS)
ABLATIONS := window buffer_size rho
STATUS_ablations = $(STATUS) --experiments $(addprefix ablation/,$(ABLATIONS)) --seeds $(SEEDS) --gpus $(GPUS) \
  --data-dir $(DATA_DIR)
# Beyond the paper: the horizon and tuning studies (experiments/studies.py, conf/experiment/
# study/). A schedule that needs the budget is trained at every HORIZON_BUDGETS x T; one that
# does not, once, at the longest (the runner refuses it at a shorter one): the two lists follow
# the schedules' needs_budget declarations, and HORIZON_BUDGETS experiments/schema.py's
# (tests/test_horizons.py checks both). The tuning study trains every schedule of both lists.
HORIZON_BUDGETS := 0.25,0.5,1,2
STUDY_QUICK_AWARE ?= step,cosine,onecycle
STUDY_QUICK_FREE  ?= autodrop,autodrop_v1,hd,schedulefree,plateau
# Five paired seeds (the fewest the paired statistics mark at); the tuning study's pool is its
# preset's (12 trials and the defaults, one seed) unless STUDY_QUICK_TRIALS names the trials.
STUDY_QUICK_SEEDS  ?= 0,1,2,3,4
STUDY_QUICK_TRIALS ?=
# Added to every study-quick run; STUDY_QUICK_T: both studies' standard budget T when set (the
# presets: 16 epochs). Tests shrink the grid so: "data.image_size=8 ...", T=4.
STUDY_QUICK_OVERRIDES ?=
STUDY_QUICK_T ?=
STUDY_QUICK_OUT ?= $(LOCAL)/quick/studies
STUDY_QUICK_REF := $(RESULTS)/quick/studies
STUDY_QUICK_HORIZONS_AWARE = experiment=study/horizons/digits scheduler=$(STUDY_QUICK_AWARE) \
  horizon.budget=$(HORIZON_BUDGETS) seed=$(STUDY_QUICK_SEEDS) \
  $(if $(STUDY_QUICK_T),horizon.standard_epochs=$(STUDY_QUICK_T)) $(STUDY_QUICK_OVERRIDES)
STUDY_QUICK_HORIZONS_FREE = experiment=study/horizons/digits scheduler=$(STUDY_QUICK_FREE) \
  seed=$(STUDY_QUICK_SEEDS) $(if $(STUDY_QUICK_T),horizon.standard_epochs=$(STUDY_QUICK_T)) \
  $(STUDY_QUICK_OVERRIDES)
STUDY_QUICK_TUNING = experiment=study/tuning/digits scheduler=$(STUDY_QUICK_AWARE),$(STUDY_QUICK_FREE) \
  $(if $(STUDY_QUICK_TRIALS),tuning.trial=$(STUDY_QUICK_TRIALS)) \
  $(if $(STUDY_QUICK_T),trainer.epochs=$(STUDY_QUICK_T)) $(STUDY_QUICK_OVERRIDES)
STATUS_study-quick = $(STATUS) --launch "$(STUDY_QUICK_HORIZONS_AWARE)" \
  --launch "$(STUDY_QUICK_HORIZONS_FREE)" --launch "$(STUDY_QUICK_TUNING)" --gpus $(QUICK_JOBS)
# The paper-size studies on the CIFAR tasks (T = their 200 epochs), one launch each as above.
STUDY_TASKS  ?= $(CIFAR_TASKS)
STUDY_AWARE  ?= step,cosine,onecycle
STUDY_FREE   ?= autodrop,autodrop_v1,hd,schedulefree,plateau,tlr,clr,exp
STUDY_SEEDS  ?= 0,1,2,3,4
STUDY_TRIALS ?=
STUDY_OUT    ?= $(LOCAL)/paper/studies
STUDY_EXPERIMENTS = $(foreach task,$(STUDY_TASKS),study/horizons/$(task) study/tuning/$(task))
study_horizons_aware = experiment=study/horizons/$(1) scheduler=$(STUDY_AWARE) \
  horizon.budget=$(HORIZON_BUDGETS) seed=$(STUDY_SEEDS)
study_horizons_free = experiment=study/horizons/$(1) scheduler=$(STUDY_FREE) seed=$(STUDY_SEEDS)
study_tuning = experiment=study/tuning/$(1) scheduler=$(STUDY_AWARE),$(STUDY_FREE) \
  $(if $(STUDY_TRIALS),tuning.trial=$(STUDY_TRIALS))
STATUS_studies = $(STATUS) $(foreach task,$(STUDY_TASKS),--launch "$(call study_horizons_aware,$(task))" \
  --launch "$(call study_horizons_free,$(task))" --launch "$(call study_tuning,$(task))") --gpus $(GPUS) \
  --data-dir $(DATA_DIR)

.PHONY: help install test test-fast lint format bench faults gpu-check quick quick-update quick-runs reproduce compare \
        ablations lr-sensitivity lr-sensitivity-update lr-sensitivity-runs lr-sensitivity-outputs \
        study-quick study-quick-update study-quick-runs study-quick-outputs studies \
        status tables figures tables-update figures-update wandb-sync clean

help: ## Show this help
	@echo "AutoDrop benchmark suite. Targets:"
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'
	@echo "Variables: LAUNCHER=local|slurm GPUS=N GPUS_PER_RUN=N DATA_DIR=path SEEDS=0,1,2,3 RESULTS=dir PRESET=name"
	@echo "  OUT=dir (tables and figures; default results/local/<PRESET>)"
	@echo "  QUICK_SCHEDULES=a,b QUICK_SEEDS=0,1 QUICK_OVERRIDES='key=value ...' (quick and lr-sensitivity grids)"
	@echo "  TASK=preset SCHEDULES=a,b OVERRIDES='key=value ...' (make compare; SEEDS default 0-4)"
	@echo "  DRY_RUN=1: targets that train or write list what they would do and change nothing"

$(STAMP): pyproject.toml
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[suite,dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the pinned environment (torch 2.14.1, Hydra, wandb, ...)

test: $(STAMP) ## Run the whole test suite (fast and slow tests; 35 min measured on 2 shared CPU cores)
	WANDB_MODE=disabled $(PY) -m pytest

test-fast: $(STAMP) ## Run the fast tests only (skip end-to-end runs)
	WANDB_MODE=disabled $(PY) -m pytest -m "not slow"

lint: $(STAMP) ## Lint with ruff, and check the formatting (make format rewrites it)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ## Format with ruff
	$(PY) -m ruff format .

bench: $(STAMP) ## Benchmarks: AutoDrop / HD / TLR / schedule-free overhead, launches per step, data loader throughput, command line
	$(PY) -m scripts.bench_autodrop
	$(PY) -m scripts.bench_baselines
	$(PY) -m scripts.bench_launches
	$(PY) -m scripts.bench_data
	$(PY) -m scripts.bench_cli --status

faults: $(STAMP) ## Fault-injection campaign on real training runs (~15 min on 2 CPU cores)
	$(PY) -m tests.fault_campaign

gpu-check: $(STAMP) ## Check and measure the GPU path on this machine's GPU (<= 8 min) -> results/gpu_check/
	$(PY) -m tests.gpu_check --out $(RESULTS)/gpu_check

quick: quick-runs ## CPU-sized grid on the embedded digits data, both protocols -> results/local/quick/ (minutes)
	@$(MAKE) --no-print-directory tables figures PRESET=quick
ifneq ($(DRY),1)
	@# Both protocols: the paper's (table2) and the honest one (table2_honest, time_to_target).
	@for table in table2 table2_honest time_to_target; do \
	  if [ -f $(OUT)/tables/$$table.md ]; then echo; cat $(OUT)/tables/$$table.md; fi; \
	done
	@echo; echo "tables and figures in $(OUT)/ (make quick-update rewrites the committed $(RESULTS)/quick/)"
endif

quick quick-update: PRESET := quick
quick-update: quick-runs ## make quick, then rewrite the committed reference output results/quick/{tables,figures}
	@$(MAKE) --no-print-directory tables-update figures-update PRESET=quick

quick-runs: $(STAMP)
ifeq ($(DRY),1)
	$(STATUS_quick) --dry-run
else
	$(TRAIN) -m experiment=quick/fixed_lr $(QUICK_OVERRIDES) paths.results_dir=$(RESULTS) logger=none $(QUICK_PARALLEL)
	$(TRAIN) -m experiment=quick/digits scheduler=$(QUICK_SCHEDULES) seed=$(QUICK_SEEDS) $(QUICK_OVERRIDES) \
	  paths.results_dir=$(RESULTS) logger=none $(QUICK_PARALLEL)
endif

reproduce: $(STAMP) ## Full paper grid (Table 2 tasks x schedules x seeds), then tables and figures (DRY_RUN=1: list and estimate only)
ifeq ($(DRY),1)
	$(STATUS_paper) --dry-run
	@$(MAKE) --no-print-directory tables figures PRESET=paper
	@echo; echo "Beyond the paper, planned here and trained by make studies (not by make reproduce):"
	$(STATUS_studies) --totals
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

ablations: $(STAMP) ## The paper's window / buffer / rho ablations (ResNet-18 CIFAR-10), then their tables
ifeq ($(DRY),1)
	$(STATUS_ablations) --dry-run
	@$(MAKE) --no-print-directory tables PRESET=ablation
else
	set -e; for grid in $(ABLATIONS); do \
	  $(TRAIN) -m experiment=ablation/$$grid seed=$(SEEDS) \
	    paths.data_dir=$(DATA_DIR) paths.results_dir=$(RESULTS) $(LAUNCH_CIFAR_$(LAUNCHER)); \
	done
	@$(MAKE) --no-print-directory tables PRESET=ablation
endif

lr-sensitivity: lr-sensitivity-runs ## Each quick schedule at lr x {1/4,1/2,1,2,4} on digits (75 runs, ~25 min) -> results/local/quick/lr_sensitivity/
	@$(MAKE) --no-print-directory lr-sensitivity-outputs

lr-sensitivity-update: lr-sensitivity-runs ## make lr-sensitivity, then rewrite the committed results/quick/lr_sensitivity/
ifeq ($(DRY),1)
	@echo "would rewrite $(LR_SENSITIVITY_REF)/ with the lr-sensitivity tables and figures"
else
	rm -rf $(UPDATE_DIR)/lr_sensitivity
	@$(MAKE) --no-print-directory lr-sensitivity-outputs LR_SENSITIVITY_OUT=$(UPDATE_DIR)/lr_sensitivity
	@$(call publish,$(UPDATE_DIR)/lr_sensitivity,$(LR_SENSITIVITY_REF))
endif

lr-sensitivity-runs: $(STAMP)
ifeq ($(DRY),1)
	$(STATUS_lr-sensitivity) --dry-run
else
	$(TRAIN) -m experiment=ablation/lr_sensitivity scheduler=$(QUICK_SCHEDULES) seed=$(LR_SENSITIVITY_SEEDS) \
	  $(QUICK_OVERRIDES) paths.results_dir=$(RESULTS) logger=none $(QUICK_PARALLEL)
endif

lr-sensitivity-outputs: $(STAMP)
ifeq ($(DRY),1)
	@echo "would write the lr-sensitivity tables and figures to $(LR_SENSITIVITY_OUT)/"
else
	$(PY) -m scripts.aggregate --runs $(RESULTS)/runs --experiment ablation/lr_sensitivity --out $(LR_SENSITIVITY_OUT)
	$(PY) -m scripts.figures summary --runs $(RESULTS)/runs --experiment ablation/lr_sensitivity --out $(LR_SENSITIVITY_OUT)/figures
endif

# A tuning trial may diverge (its lr is drawn up to 10x the task's): that is a result, so every
# launch runs, the outputs are written (they list such runs and score diverged trials), and the
# target then fails if a job did not finish, as make reproduce does.
study-quick: $(STAMP) ## Horizon and tuning studies on digits (~35 min on 2 cores) -> results/local/quick/studies/
	@status=0; $(MAKE) --no-print-directory study-quick-runs || status=1; \
	$(MAKE) --no-print-directory study-quick-outputs && exit $$status

study-quick-update: $(STAMP) ## make study-quick, then rewrite the committed results/quick/studies/
ifeq ($(DRY),1)
	@$(MAKE) --no-print-directory study-quick-runs
	@echo "would rewrite $(STUDY_QUICK_REF)/ with the studies' tables, figures and README"
else
	@status=0; $(MAKE) --no-print-directory study-quick-runs || status=1; \
	rm -rf $(UPDATE_DIR)/quick_studies && \
	$(MAKE) --no-print-directory study-quick-outputs STUDY_QUICK_OUT=$(UPDATE_DIR)/quick_studies && \
	$(call publish,$(UPDATE_DIR)/quick_studies,$(STUDY_QUICK_REF)) && exit $$status
endif

study-quick-runs: $(STAMP)
ifeq ($(DRY),1)
	$(STATUS_study-quick) --dry-run
else
	status=0; \
	$(TRAIN) -m $(STUDY_QUICK_HORIZONS_AWARE) paths.results_dir=$(RESULTS) logger=none $(QUICK_PARALLEL) || status=1; \
	$(TRAIN) -m $(STUDY_QUICK_HORIZONS_FREE) paths.results_dir=$(RESULTS) logger=none $(QUICK_PARALLEL) || status=1; \
	$(TRAIN) -m $(STUDY_QUICK_TUNING) paths.results_dir=$(RESULTS) logger=none $(QUICK_PARALLEL) || status=1; \
	exit $$status
endif

study-quick-outputs: $(STAMP)
ifeq ($(DRY),1)
	@echo "would write the studies' tables, figures and README to $(STUDY_QUICK_OUT)/"
else
	$(PY) -m scripts.studies --runs $(RESULTS)/runs --experiments study/horizons/digits study/tuning/digits \
	  --out $(STUDY_QUICK_OUT)
endif

studies: $(STAMP) ## Horizon and tuning studies at the paper's size (CIFAR tasks) -> results/local/paper/studies/ (DRY_RUN=1: plan only)
ifeq ($(DRY),1)
	$(STATUS_studies) --dry-run
	@echo "would write the studies' tables, figures and README to $(STUDY_OUT)/"
else
	status=0; for task in $(STUDY_TASKS); do \
	  for launch in "$(call study_horizons_aware,$$task)" "$(call study_horizons_free,$$task)" \
	                "$(call study_tuning,$$task)"; do \
	    $(TRAIN) -m $$launch paths.data_dir=$(DATA_DIR) paths.results_dir=$(RESULTS) \
	      $(LAUNCH_CIFAR_$(LAUNCHER)) || status=1; \
	  done; done; \
	$(PY) -m scripts.studies --runs $(RESULTS)/runs --experiments $(STUDY_EXPERIMENTS) \
	  --out $(STUDY_OUT) && exit $$status
endif

# make compare: schedules on one task (scripts/compare.py), the first one the baseline. SEEDS
# defaults to COMPARE_SEEDS here (five: the fewest from which a difference can be marked);
# OVERRIDES go to every run (e.g. "trainer.epochs=5 logger=none hydra/launcher=joblib").
TASK      ?=
SCHEDULES ?=
OVERRIDES ?=
COMPARE_SEEDS ?= 0-4
given = $(filter-out file default undefined,$(origin $(1)))
COMPARE_OUT = $(if $(call given,OUT),$(OUT),$(LOCAL)/compare/$(TASK))
compare: $(STAMP) ## Compare schedules on a task: train what is missing, print mean ± std and paired CIs vs the first (TASK=quick/digits SCHEDULES=autodrop,step SEEDS=0-4 OVERRIDES=...) -> results/local/compare/<TASK>/
	$(PY) -m scripts.compare --task "$(TASK)" --schedules "$(SCHEDULES)" \
	  --seeds "$(if $(call given,SEEDS),$(SEEDS),$(COMPARE_SEEDS))" --runs $(RESULTS)/runs \
	  --out $(COMPARE_OUT) $(if $(DRY),--dry-run) -- \
	  $(if $(call given,DATA_DIR),paths.data_dir=$(DATA_DIR)) $(OVERRIDES)

PRESET ?= paper
NO_GRID = echo "PRESET=$(PRESET) has no grid: use paper, quick, lr-sensitivity, ablations, study-quick or studies" >&2; exit 2
status: $(STAMP) ## Grid status: finished/running/stale/failed/diverged/missing, compute left, other runs (PRESET=paper|quick|lr-sensitivity|ablations|study-quick|studies, GPUS=N)
	$(or $(STATUS_$(PRESET)),$(NO_GRID))

tables: $(STAMP) ## Aggregate runs into the paper's tables -> results/local/<PRESET>/tables/ (PRESET=paper|quick|ablation)
ifeq ($(DRY),1)
	@echo "would write the tables of the $(PRESET) runs in $(RESULTS)/runs to $(OUT)/tables/"
else
	$(PY) -m scripts.aggregate --runs $(RESULTS)/runs --experiment $(PRESET) --out $(OUT)
endif

figures: $(STAMP) ## Draw every figure from the runs -> results/local/<PRESET>/figures/ (PRESET=paper|quick)
ifeq ($(DRY),1)
	@echo "would draw the figures of the $(PRESET) runs in $(RESULTS)/runs into $(OUT)/figures/"
else
	$(PY) -m scripts.figures theory --out $(OUT)/figures
	$(PY) -m scripts.figures curves --runs $(RESULTS)/runs --experiment $(PRESET) --out $(OUT)/figures
endif

# $(call update,tables|figures): build them afresh in $(UPDATE_DIR), then rewrite the committed
# results/<PRESET>/<tables|figures>/ with them.
update = $(if $(DRY),@echo "would rewrite $(RESULTS)/$(PRESET)/$(1)/ with the $(1) of the $(PRESET) runs",\
	rm -rf $(UPDATE_DIR)/$(PRESET)/$(1) && $(MAKE) --no-print-directory $(1) OUT=$(UPDATE_DIR)/$(PRESET) && \
	$(call publish,$(UPDATE_DIR)/$(PRESET)/$(1),$(RESULTS)/$(PRESET)/$(1)))

tables-update: $(STAMP) ## make tables, then rewrite the committed results/<PRESET>/tables/ with them (nothing stale kept)
	$(call update,tables)

figures-update: $(STAMP) ## make figures, then rewrite the committed results/<PRESET>/figures/ with them
	$(call update,figures)

wandb-sync: $(STAMP) ## Upload runs that were logged offline (needs WANDB_API_KEY and network; DRY_RUN=1: list only)
	@echo "looking for offline wandb runs under $(RESULTS)/runs (RESULTS=<dir> looks elsewhere)"; \
	found=$$(find $(RESULTS)/runs -type d -name 'offline-run-*' 2>/dev/null); \
	if [ -z "$$found" ]; then echo "no offline wandb runs under $(RESULTS)/runs"; \
	else echo "$$(echo "$$found" | wc -l) offline runs found"; \
	  $(if $(DRY),echo "would upload:"; echo "$$found",$(VENV)/bin/wandb sync $$found); fi

.PHONY: wandb-upload
wandb-upload: $(STAMP) ## Log finished runs to W&B from their records (EXPERIMENT=prefix, DRY_RUN=1: list only)
	$(PY) -m scripts.wandb_upload --runs $(RESULTS)/runs $(if $(EXPERIMENT),--experiment $(EXPERIMENT)) \
	  $(if $(PROJECT),--project $(PROJECT)) $(if $(ENTITY),--entity $(ENTITY)) $(if $(filter 1,$(DRY_RUN)),--dry-run)

clean: ## Remove caches (keeps .venv and results)
	rm -rf .pytest_cache .ruff_cache .cache outputs multirun
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
