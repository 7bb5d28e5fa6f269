"""Keras Tuner sweep over a config's search space, resumable.

The space lives in the config (`config.sweep.space[method]`: hyperparameter ->
list of values); one tuner per method of `config.sweep.methods`, on the first
setting of repeat 0 with its TEST part replaced by its validation part, so the
tuner never sees test images. Objective: the same validation selection value
as every comparison (`config.training.selection`, e.g. macro-F1).

Resume: each tuner keeps its trials under `<workdir>/sweep/<method>/` and is
reopened with `overwrite=False`, so a killed sweep continues with the trial it
was in; a method whose best trial was recorded is a finished job
(`sweep_<setting>/r0/<method>`) and is skipped. `--restart` starts over.

Needs `keras-tuner` (`pip install "tfcell[tuner]"`); `require_keras_tuner()`
says so before any data is read.
"""

import dataclasses
import os

from tfcell.experiments import tasks
from tfcell.experiments import workdir as workdir_lib
from tfcell.training import strategy as strategy_lib

__all__ = ["require_keras_tuner", "run_sweep"]


def require_keras_tuner():
    """Raises a clear error when keras-tuner (or the TensorBoard it needs) is missing."""
    try:
        import keras_tuner  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            f'A sweep needs keras-tuner ({error}). Install it with: pip install "tfcell[tuner]"'
        ) from error


def _choose(hp, name, values):
    values = list(values)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return hp.Choice(name, values)
    return hp.Choice(name, [float(v) for v in values])


def _validation_view(setting):
    parts = {"train": setting.parts["train"], "val": setting.parts["val"]}
    parts["test"] = setting.parts["val"]
    return dataclasses.replace(setting, parts=parts)


def run_sweep(protocol, config, workdir, restart=False):
    """Tunes each method of `config.sweep.methods`; returns `{method: best hp}`."""
    require_keras_tuner()
    if strategy_lib.num_workers() > 1:
        raise ValueError(
            "A sweep runs on one machine (MirroredStrategy over its GPUs); TF_CONFIG names "
            "several workers. To spread trials over machines use Keras Tuner's own "
            "distributed tuning (KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / "
            "KERASTUNER_ORACLE_PORT, one tuner process per machine, TF_CONFIG unset); "
            "see docs/scaling.md."
        )
    import keras

    from tfcell.experiments import runner

    policy = runner._dtype_policy(config)  # config.mixed_precision, as for a run
    previous = keras.mixed_precision.global_policy()
    if policy is not None:
        print(f"Mixed precision: {policy} for every trial.", flush=True)
        keras.mixed_precision.set_global_policy(policy)
    try:
        return _run_sweep(protocol, config, workdir, restart)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _run_sweep(protocol, config, workdir, restart):
    wd = workdir_lib.Workdir(workdir, config, restart=restart)
    setting = _validation_view(protocol.settings(config, 0)[0])
    data = protocol.task.prepare(setting, config, wd.cache_dir)
    strategy = strategy_lib.get_strategy()
    methods = protocol.methods(config)
    best = {}
    for name in config.sweep.methods:
        key = workdir_lib.job_key(f"sweep_{setting.name}", 0, name)
        if wd.is_finished(key):
            done = [r for r in wd.records() if r.get("job") == key]
            best[name] = done[0]["hparams"] if done else {}
            print(f"sweep {name}: finished earlier, skipped", flush=True)
            continue
        tuner = _make_tuner(protocol, config, name, methods[name], data, strategy, wd.path)
        tuner.search()
        trial = tuner.oracle.get_best_trials(1)[0]
        hp = {**protocol.hparams(config, name), **trial.hyperparameters.values}
        best[name] = hp
        objective = config.training.selection
        wd.finish(
            key,
            [
                {
                    "setting": setting.name,
                    "method": name,
                    "kind": "sweep",
                    "hparams": hp,
                    "objective": objective,
                    "best_value": float(trial.score),
                    "trials": len(tuner.oracle.trials),
                }
            ],
        )
        print(f"sweep {name}: best {objective} {trial.score:.3f} with {hp}", flush=True)
    wd.write_json(os.path.join("sweep", "best_hparams.json"), best)
    wd.write_done()
    return best


def _make_tuner(protocol, config, name, method, data, strategy, workdir):
    """A Keras Tuner whose trial trains `name` with the trial's hyperparameters
    (over the protocol's defaults) and reports the validation selection value."""
    import keras_tuner

    defaults = protocol.hparams(config, name)
    space = dict(config.sweep.space[name])

    def run_trial(self, trial, *args, **kwargs):
        hp = dict(defaults)
        for key, values in space.items():
            hp[key] = _choose(trial.hyperparameters, key, values)
        job = tasks.Job(
            key=f"trial/{trial.trial_id}", name=name, method=method, hp=hp, data=data,
            config=config, seed=config.seed, strategy=strategy, verbose=0,
            augment=protocol.augmentation(config, config.seed),
        )  # fmt: skip
        result = protocol.task.run_job(job)
        return {"objective": result.records[0]["val_selection_value"]}

    base = {
        "random": keras_tuner.RandomSearch,
        "bayesian": keras_tuner.BayesianOptimization,
    }[config.sweep.tuner]
    tuner_cls = type(f"{base.__name__}Sweep", (base,), {"run_trial": run_trial})
    return tuner_cls(
        hypermodel=None,
        objective=keras_tuner.Objective("objective", "max"),
        max_trials=config.sweep.max_trials,
        seed=config.seed,
        directory=os.path.join(workdir, "sweep"),
        project_name=name,
        overwrite=False,
    )
