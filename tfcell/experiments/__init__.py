"""tfcell experiments: the paper-agnostic harness every reproduction runs on.

    workdir    a run's files, job keys, resume (`results.jsonl` + per-job `done`)
    settings   data splits from `tfcell.data` (holdout, subject k-fold,
               leave-one-domain-out, train-on-one / test-on-every-domain)
    methods    `LossMethod` (a head + a compiled loss) and `TrainerMethod`
               (a `tfcell.training` trainer on dict batches)
    selection  model selection by validation macro-F1 / accuracy; NaN stop
    tasks      what a job does (`ClassificationTask`: train, select, calibrate,
               evaluate)
    protocol   what a paper package provides (`Protocol`)
    runner     every job of a protocol, then the report and `done`
    sweep      a resumable Keras Tuner sweep
    collect    finished workdirs -> docs/papers.md
    script     what a reproduction script's `main` calls

A paper is a package in `tfcell.papers` (protocol, methods, tables), a config
in `configs/` and a script in `reproductions/`; nothing here names a paper.
"""

from tfcell.experiments import (
    collect,
    methods,
    protocol,
    runner,
    selection,
    settings,
    sweep,
    tasks,
    workdir,
)
from tfcell.experiments.protocol import Protocol, load_protocol
