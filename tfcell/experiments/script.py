"""What every reproduction script's `main` does, once: log versions and the
config, check what the run needs, seed, sweep or run, and print where the
report is.

Scripts import this module inside `main`, after absl has parsed the flags, so
that `--help` answers without importing TensorFlow.
"""

import logging
import os
import sys

import keras
import numpy as np
import tensorflow as tf

import tfcell
from tfcell.experiments import protocol as protocol_lib
from tfcell.experiments import runner, sweep

__all__ = ["download_or_exit", "run_script"]


def download_or_exit(config, names, root):
    """`--config.data.download=True`: fetch `names` into `root` and point
    `config.data.root` at it; on failure, exit non-zero with the reason (never
    a silent fall-back to synthetic data)."""
    if config.data.root or not config.data.get("download"):
        return
    from tfcell.data import download

    try:
        for name in names:
            download.fetch(name, root)
    except Exception as error:  # noqa: BLE001 (offline, moved URL, bad checksum, ...)
        raise SystemExit(
            f"--config.data.download=True: downloading {', '.join(names)} into {root} failed: "
            f"{type(error).__name__}: {error}. Download by hand and pass "
            "--config.data.root=<folder>, or leave download off to run on the default data."
        ) from error
    with config.unlocked():
        config.data.root = root


def run_script(config, workdir, restart=False, prepare=None):
    """Runs a reproduction from its parsed config.

    Args:
        config: the script's `ml_collections.ConfigDict` (from `--config`);
            `config.protocol` names the paper's protocol.
        workdir: output folder (`--workdir`); the same command resumes there.
        restart: `--restart`: start over in `workdir`.
        prepare: optional `(config) -> None` run first (e.g. a download).

    Returns:
        None, always: absl's `app.run` exits with `main`'s return value.
    """
    logging.getLogger("tfcell").setLevel(logging.INFO)
    print(
        f"tfcell {tfcell.__version__}, TF {tf.__version__}, Keras {keras.__version__}, "
        f"numpy {np.__version__}, Python {sys.version.split()[0]}"
    )
    if config.sweep.get("enabled"):
        sweep.require_keras_tuner()  # Before any data is read.
    protocol = protocol_lib.load_protocol(config.protocol)
    if prepare is not None:
        prepare(config)
    prepare_config = getattr(protocol, "prepare_config", None)
    if prepare_config is not None:
        prepare_config(config)
    print(config)
    keras.utils.set_random_seed(config.seed)
    if config.sweep.get("enabled"):
        best = sweep.run_sweep(protocol, config, workdir, restart=restart)
        print(f"Best hyperparameters: {os.path.join(workdir, 'sweep', 'best_hparams.json')}")
        print(best)
        return None
    path = runner.run(protocol, config, workdir, restart=restart)
    if path is None:  # A worker of a multi-worker run: the chief writes the report.
        print(f"\nThis worker's part is done; the chief writes the report into {workdir}.")
        return None
    print(f"\nReport: {os.path.abspath(path)}")
    return None
