r"""Reproduces the IDC study of the CFAL paper: AlexNet with six losses, the
ablation and three ensembles, by patch and by patient.

Paper: Mahbub et al., "Center-Focused Affinity Loss for Class Imbalance
Histology Image Classification", IEEE JBHI 28(2), 2024; Tables IV, IX, X, XI,
Fig. 4 (IDC: Janowczyk & Madabhushi 2016, 50 x 50 patches resized to 32 x 32).

    python reproductions/cfal_idc.py --config=configs/cfal_idc.py:cpu \
        --workdir=workdirs/cfal_idc_cpu
    python reproductions/cfal_idc.py --config=configs/cfal_idc.py:sweep
    python reproductions/cfal_idc.py --config.data.root=/data/IDC_regular_ps50_idx5

Data: `--config.data.root` (the publisher's IDC_regular_ps50_idx5 layout);
without it ../shared/data/idc when present, else synthetic IDC-like patches
with a loud banner.

<!-- cfal_idc:result:start -->
Result: paper (Table IV): cfal macro-F1 0.83, accuracy 86.0 %; measured (`cpu`
config, real data, `patient` split): cfal macro-F1 0.748 +- 0.016, accuracy 82.2
+- 0.7 % over 3 runs; ce macro-F1 0.752 +- 0.031, accuracy 83.0 +- 1.0 % over 3
runs; on CPU (2 cores visible), Linux, TF 2.21.0, Keras 3.15.1, 32 min (written
by collect_results.py from `cfal_idc_cpu`).
<!-- cfal_idc:result:end -->
"""

import os

from absl import app, flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import tfcell  # noqa: E402, F401  (registers the losses and layers)
from tfcell.experiments import data, script  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "..", "configs", "cfal_idc.py"),
    "Config file (variants: paper, cpu, smoke, sweep).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/cfal_idc", "Output folder.")


def _resolve_download(config):
    """`--config.data.download=True` and no root: fetch IDC when online."""
    if config.data.root or not config.data.download:
        return
    from tfcell.data import download

    with config.unlocked():
        try:
            config.data.root = str(download.fetch("idc", os.path.join(_WORKDIR.value, "data")))
        except Exception as error:  # Offline or no URL: say so, fall back.
            print(f"Download failed ({error}); using the local or synthetic data.", flush=True)


def main(argv):
    del argv
    return script.run_script(
        _CONFIG.value, _WORKDIR.value, data.idc_settings, prepare=_resolve_download
    )


if __name__ == "__main__":
    app.run(main)
