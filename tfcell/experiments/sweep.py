"""Keras Tuner sweep over the CFAL paper's search space (Table III).

    beta     all class-balanced losses   0.9, 0.99, 0.999, 0.9999, 0.99999
    margin   CFAL (lambda)               0.1 ... 0.9 (steps of 0.1)
    sigma    CFAL                        80 ... 430 (steps of 50)
    gamma    CFAL                        0.5, 1.0, 2.0, 5.0
    scale    ArcFace/CosFace/SphereFace  1, 5, 10, 15, 20, 30, 64
    margin   ArcFace/CosFace/SphereFace  0.1, 0.35, 0.5, 0.7, 0.9

The space itself lives in the config (`config.sweep.space`); one tuner per
method, objective: macro-F1 on the validation split (the paper's main metric
for imbalanced data). The best trial of each method is written to
`<workdir>/sweep/best_hparams.json` and appended to `results.jsonl`; the workdir
also gets `config.json` and, last, `done`, as a comparison run does.
"""

import os

from tfcell.evaluation import report
from tfcell.experiments import runner
from tfcell.training import strategy as strategy_lib

__all__ = ["run_sweep"]


def _choose(hp, name, values):
    values = list(values)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return hp.Choice(name, values)
    return hp.Choice(name, [float(v) for v in values])


def run_sweep(config, workdir, settings_fn):
    """Tunes each method of `config.sweep.methods` on the first setting; returns
    `{method: best hyperparameters}`."""
    runner.start_workdir(workdir, config)
    setting = settings_fn(config, 0)[0]
    strategy = strategy_lib.get_strategy()
    writer = report.ResultsWriter(workdir)
    best = {}
    for name in config.sweep.methods:
        defaults = dict(config.loss[name])
        tuner = _make_tuner(config, name, setting, strategy, workdir)
        tuner.search()
        trial = tuner.oracle.get_best_trials(1)[0]
        hp = {**defaults, **trial.hyperparameters.values}
        best[name] = hp
        writer.write(
            {
                "setting": setting.name,
                "method": name,
                "kind": "sweep",
                "hparams": hp,
                "val_f1": float(trial.score),
                "trials": len(tuner.oracle.trials),
            }
        )
        print(f"sweep {name}: best val macro-F1 {trial.score:.3f} with {hp}", flush=True)
    runner.write_json(os.path.join(workdir, "sweep", "best_hparams.json"), best)
    report.write_done(workdir)
    return best


def _make_tuner(config, name, setting, strategy, workdir):
    """A Keras Tuner whose trial trains `name` with the trial's hyperparameters
    (over the defaults of `config.loss[name]`) and reports validation macro-F1."""
    import keras_tuner

    defaults = dict(config.loss[name])
    space = dict(config.sweep.space[name])
    validation = _as_validation(setting)

    def run_trial(self, trial, *args, **kwargs):
        hp = dict(defaults)
        for key, values in space.items():
            hp[key] = _choose(trial.hyperparameters, key, values)
        _, record, _ = runner.train_method(
            name, validation, config, config.seed, strategy, hp=hp, verbose=0
        )
        return {"val_f1": record["f1"]}

    base = {
        "random": keras_tuner.RandomSearch,
        "bayesian": keras_tuner.BayesianOptimization,
    }[config.sweep.tuner]
    tuner_cls = type(f"{base.__name__}CFAL", (base,), {"run_trial": run_trial})
    return tuner_cls(
        hypermodel=None,
        objective=keras_tuner.Objective("val_f1", "max"),
        max_trials=config.sweep.max_trials,
        seed=config.seed,
        directory=os.path.join(workdir, "sweep"),
        project_name=name,
        overwrite=True,
    )


def _as_validation(setting):
    """The setting with its validation split as the test split, so that the
    tuner never sees the test images (early stopping still uses validation)."""
    import dataclasses

    return dataclasses.replace(setting, test=setting.val)
