"""What every reproduction script's `main` does, once: log versions and the
config, seed, sweep or run, and print where the report is."""

import logging
import os
import sys

import keras
import numpy as np
import tensorflow as tf

import tfcell
from tfcell.experiments import data as data_lib
from tfcell.experiments import runner, sweep

__all__ = ["run_script"]


def run_script(config, workdir, settings_fn, prepare=None, synthetic_scale=False):
    """Runs a reproduction from its parsed config.

    Args:
        config: the script's `ml_collections.ConfigDict` (from `--config`).
        workdir: output folder (`--workdir`).
        settings_fn: `(config, repeat) -> [Setting]`, e.g. `data.idc_settings`.
        prepare: optional `(config) -> None` run first (e.g. a download that
            sets `config.data.root`).
        synthetic_scale: switch to the config's `synthetic` section when no
            real data is given (CRC: VGG19 at 224 px is pointless on the
            embedded tiles).

    Returns:
        None, always: absl's `app.run` exits with `main`'s return value.
    """
    logging.getLogger("tfcell").setLevel(logging.INFO)
    print(
        f"tfcell {tfcell.__version__}, TF {tf.__version__}, Keras {keras.__version__}, "
        f"numpy {np.__version__}, Python {sys.version.split()[0]}"
    )
    if prepare is not None:
        prepare(config)
    if synthetic_scale and data_lib.uses_synthetic(config):
        data_lib.apply_synthetic_scale(config)
    print(config)
    keras.utils.set_random_seed(config.seed)
    if config.sweep.enabled:
        best = sweep.run_sweep(config, workdir, settings_fn)
        print(f"Best hyperparameters: {os.path.join(workdir, 'sweep', 'best_hparams.json')}")
        print(best)
        return None
    path = runner.run(config, workdir, settings_fn)
    print(f"\nReport: {os.path.abspath(path)}")
    return None
