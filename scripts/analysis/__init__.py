"""The analysis library behind the commands in ``scripts/``: run directories (or W&B runs) into
DataFrames (:mod:`.runs`, :mod:`.wandb_reader`), the paper's tables (:mod:`.tables`,
:mod:`.report`), statistics over seeds (:mod:`.statistics`), figures (:mod:`.figures`), the
noisy-quadratic study (:mod:`.nqm`) and grid status (:mod:`.grid`, :mod:`.status`). Pure library:
the command lines live in ``scripts/*.py``."""
