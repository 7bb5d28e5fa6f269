"""The runner: every job of a protocol, with resume, then the report and `done`.

    for repeat in range(config.num_repeats):            # seed = config.seed + repeat
        for setting in protocol.settings(config, repeat):
            for name, method in protocol.methods(config).items():
                job "<setting>/r<repeat>/<name>": train, select, calibrate, evaluate
            protocol.combine(...)                          # e.g. ensembles, from saved outputs
        protocol.combine_repeat(...)                       # across settings: fold ensembles
    protocol.write_report(...); done

Finished jobs are skipped when the same command runs again (`workdir.Workdir`),
so a killed run continues where it stopped; a setting whose jobs are all
finished is not even loaded. Paper-agnostic: the paper lives in the protocol.

The GPU path, for every paper: `config.mixed_precision=True` runs the whole
run under Keras' `mixed_float16` policy (float16 compute, float32 variables;
`compile` wraps the optimizer in a `LossScaleOptimizer`, the trainers scale
their loss with it; heads and losses stay float32) and restores the previous
policy afterwards; it is recorded in `run.json` (`dtype_policy`).
`config.training.jit_compile` (XLA) and `config.training.augment_in_model`
are read by the task (`tasks.ClassificationTask`); a task that does not read
them refuses a run that sets them.
"""

import json
import logging
import os
import platform
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tfcell.experiments import protocol as protocol_lib
from tfcell.experiments import tasks
from tfcell.experiments import workdir as workdir_lib
from tfcell.training import loop
from tfcell.training import strategy as strategy_lib

__all__ = ["base_record", "hardware", "run", "SYNTHETIC_BANNER"]

logger = logging.getLogger("tfcell.experiments")

SYNTHETIC_BANNER = (
    "#" * 78 + "\n"
    "#  SYNTHETIC DATA: no real dataset was found or given, so this run uses the\n"
    "#  embedded synthetic images. Its numbers say the code runs end to end; they\n"
    "#  say NOTHING about the paper's claims. Pass --config.data.root=<folder in the\n"
    "#  publisher's layout> (or --config.data.download=True when online).\n" + "#" * 78
)


def hardware():
    gpus = tf.config.list_physical_devices("GPU")
    return (
        f"{len(gpus)} GPU(s)" if gpus else f"CPU ({os.cpu_count()} cores visible)"
    ) + f", {platform.system()}, TF {tf.__version__}, Keras {keras.__version__}"


def base_record(setting, repeat, seed):
    """The fields every record of a job on `setting` carries."""
    return {
        "setting": setting.name,
        "repeat": repeat,
        "seed": seed,
        "synthetic": setting.synthetic,
        "num_train": setting.size("train"),
        "num_val": setting.size("val"),
        "class_names": list(setting.class_names),
        "description": setting.description,
    }


def _keep_model(config, repeat):
    keep = config.get("save_model_repeats", -1)
    return keep < 0 or repeat < keep


def _combine_repeat(protocol, wd, config, repeat, seed, settings, keys):
    """`protocol.combine_repeat` over every setting of a repeat (e.g. the
    ensemble of the fold models of a k-fold protocol on a shared test set);
    its records are stored as jobs `combined/r<repeat>/<name>`."""
    if type(protocol).combine_repeat is protocol_lib.Protocol.combine_repeat:
        return  # Not overridden: nothing to load.
    pending = [
        n for n in protocol.combined_names(config)
        if not wd.is_finished(workdir_lib.job_key("combined", repeat, n))
    ]  # fmt: skip
    if not pending:
        return
    outputs = {s: {n: wd.outputs(k) for n, k in ks.items()} for s, ks in keys.items()}
    combined = protocol.combine_repeat(settings, outputs, config)
    for name, records in combined.items():
        key = workdir_lib.job_key("combined", repeat, name)
        if wd.is_finished(key):
            continue
        first = settings[0]
        common = {
            "setting": "combined",
            "repeat": repeat,
            "seed": seed,
            "synthetic": first.synthetic,
            "class_names": list(first.class_names),
        }
        wd.finish(key, [{**common, **r} for r in records])


# config.training options a task must declare (`task.training_options`) to be run with.
_TASK_OPTIONS = ("jit_compile", "augment_in_model")


def _check_task_options(task, config):
    """A clear error for a task option the protocol's task would silently ignore."""
    training = config.get("training") or {}
    for option in _TASK_OPTIONS:
        value = training.get(option, False)
        if value and option not in getattr(task, "training_options", ()):
            raise ValueError(
                f"config.training.{option}={value!r}, but this protocol's task "
                f"({type(task).__name__}) does not support it (tasks.ClassificationTask and "
                f"its subclasses do). Set config.training.{option}=False."
            )


def _dtype_policy(config):
    """The policy `config.mixed_precision=True` asks for ("mixed_float16"), else None."""
    mixed = config.get("mixed_precision", False)
    if mixed not in (True, False):
        raise ValueError(f"config.mixed_precision must be True or False; received {mixed!r}.")
    return "mixed_float16" if mixed else None


def run(protocol, config, workdir, restart=False):
    """Runs (or resumes) every job; returns the path of `report.md`.

    Args:
        protocol: the paper's `protocol.Protocol`.
        config: its `ml_collections.ConfigDict`.
        workdir: output folder; a previous run of the same config there is resumed.
        restart: start over (delete the previous run's files).
    """
    _check_task_options(protocol.task, config)
    policy = _dtype_policy(config)
    previous_policy = keras.mixed_precision.global_policy()
    if policy is not None:
        print(
            f"Mixed precision: {policy} (float16 compute, float32 variables, loss scaling).",
            flush=True,
        )
        keras.mixed_precision.set_global_policy(policy)
    try:
        return _run(protocol, config, workdir, restart, policy)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _run(protocol, config, workdir, restart, policy):
    strategy = strategy_lib.get_strategy()
    logger.info(
        "strategy %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync
    )
    chief = loop.is_chief()
    if not chief:
        # A worker's scratch folder (decoded images, job files); its results
        # are the chief's, so nothing of it is kept.
        task_type, index, _ = loop.task_info()
        scratch = tempfile.mkdtemp(prefix=f"tfcell-{task_type}{index}-")
        print(f"{task_type} {index}: training with the chief; scratch files in {scratch}, "
              f"results in the chief's {workdir}.", flush=True)  # fmt: skip
        try:
            return _run_jobs(protocol, config, scratch, False, policy, strategy, chief)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _run_jobs(protocol, config, workdir, restart, policy, strategy, chief)


def _save_job(wd, config, key, folder, setting, repeat, seed, name, result):
    """The chief's part of a finished job: its model, records, outputs, `done`."""
    if result.model is not None and _keep_model(config, repeat):
        result.model.save(os.path.join(folder, "model.keras"))
    records = [{**base_record(setting, repeat, seed), **r} for r in result.records]
    wd.finish(key, records, result.outputs)
    main = records[0]
    print(
        f"  {name:14s} f1 {main.get('f1', float('nan')):.3f} acc "
        f"{main.get('accuracy', float('nan')):.3f} (best epoch "
        f"{main.get('best_epoch', '-')}/{main.get('epochs', '-')}, "
        f"{main.get('epoch_time_s', float('nan')):.1f} s/epoch)",
        flush=True,
    )


def _finished(wd, keys, strategy):
    """Which of `keys` are finished: the chief's answer, on every worker."""
    flags = [float(wd.is_finished(k)) for k in keys]
    if not flags:
        return []
    return [bool(f) for f in np.atleast_1d(loop.broadcast_from_chief(flags, strategy))]


def _run_jobs(protocol, config, workdir, restart, policy, strategy, chief):
    wd = workdir_lib.Workdir(workdir, config, restart=restart)
    if wd.resumed:
        print(f"Resuming {wd.path}: {len(wd.finished_jobs())} job(s) already finished.", flush=True)
    methods = protocol.methods(config)
    start = time.perf_counter()
    announced = False
    trained = 0
    for repeat in range(config.num_repeats):
        seed = config.seed + repeat
        repeat_settings, repeat_keys = [], {}
        for setting in protocol.settings(config, repeat):
            keys = {n: workdir_lib.job_key(setting.name, repeat, n) for n in methods}
            finished = dict(zip(keys, _finished(wd, list(keys.values()), strategy)))
            pending = [n for n in keys if not finished[n]]
            label = f"[{setting.name} repeat {repeat + 1}/{config.num_repeats}]"
            if setting.synthetic and not announced:
                from tfcell.data import synthetic

                print(SYNTHETIC_BANNER + "\n" + synthetic.SYNTHETIC_BANNER, flush=True)
                logger.warning("synthetic data in use")
                announced = True
            data = None
            if pending:
                data = protocol.task.prepare(setting, config, wd.cache_dir)
                print(
                    f"{label} {setting.description}: train {setting.size('train')}, val "
                    f"{setting.size('val')}, "
                    + ", ".join(f"{p} {setting.size(p)}" for p in setting.test_parts),
                    flush=True,
                )
            for name in methods:
                key = keys[name]
                if finished[name]:
                    logger.info("skip finished job %s", key)
                    continue
                folder = wd.job_dir(key)
                job = tasks.Job(
                    key=key,
                    name=name,
                    method=methods[name],
                    hp=protocol.hparams(config, name),
                    data=data,
                    config=config,
                    seed=seed,
                    strategy=strategy,
                    folder=folder,
                    augment=protocol.augmentation(config, seed),
                )
                result = protocol.task.run_job(job)
                trained += 1
                if chief:
                    _save_job(wd, config, key, folder, setting, repeat, seed, name, result)
                del result
                keras.utils.clear_session()
                if policy is not None:  # clear_session resets the global policy.
                    keras.mixed_precision.set_global_policy(policy)
            if not chief:
                continue  # Combinations read the saved outputs: the chief's work.
            outputs = {n: wd.outputs(k) for n, k in keys.items()}
            for name, combined in protocol.combine(setting, outputs, config).items():
                key = workdir_lib.job_key(setting.name, repeat, name)
                if not wd.is_finished(key):
                    wd.finish(key, [{**base_record(setting, repeat, seed), **r} for r in combined])
            repeat_settings.append(setting)
            repeat_keys[setting.name] = keys
        if chief:
            _combine_repeat(protocol, wd, config, repeat, seed, repeat_settings, repeat_keys)
    elapsed = time.perf_counter() - start
    if not chief:
        print(f"worker: {trained} job(s) trained with the chief in {elapsed / 60:.1f} min.")
        return None
    previous = 0.0
    run_json = os.path.join(wd.path, "run.json")
    if wd.resumed and os.path.exists(run_json):
        with open(run_json) as f:
            previous = float(json.load(f).get("elapsed_min", 0.0))
    run_info = {
        "hardware": hardware(),
        "elapsed_min": previous + elapsed / 60,
        "this_attempt_min": elapsed / 60,
        "jobs_trained_this_attempt": trained,
        "resumed": wd.resumed,
        "dtype_policy": keras.mixed_precision.global_policy().name,
        "jit_compile": config.get("training", {}).get("jit_compile", False),
        "augment_in_model": bool(config.get("training", {}).get("augment_in_model", False)),
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": strategy_lib.num_workers(),
    }
    wd.write_json("run.json", run_info)
    path = protocol.write_report(wd.path, config, wd.records(), run_info)
    wd.write_done()
    return path
