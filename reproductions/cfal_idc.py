r"""Reproduces the IDC study of the CFAL paper: AlexNet with six losses, the
ablation and three ensembles, by patch and by patient.

Paper: Mahbub et al., "Center-Focused Affinity Loss for Class Imbalance
Histology Image Classification", IEEE JBHI 28(2), 2024; Tables IV, IX, X, XI,
Fig. 4 (IDC: Janowczyk & Madabhushi 2016, 50 x 50 patches resized to 32 x 32).

    python reproductions/cfal_idc.py --config=configs/cfal_idc.py:cpu \
        --workdir=workdirs/cfal_idc_cpu
    python reproductions/cfal_idc.py --config=configs/cfal_idc.py:sweep
    python reproductions/cfal_idc.py --config.data.root=/data/IDC_regular_ps50_idx5
    python reproductions/cfal_idc.py --config=configs/cfal_idc.py:cpu --restart  # start over

Data: `--config.data.root` (the publisher's IDC_regular_ps50_idx5 layout);
without it ../shared/data/idc when present, else synthetic IDC-like patches
with a loud banner.

<!-- cfal_idc:result:start -->
Result: paper (Table IV): cfal macro-F1 0.83, accuracy 86.0 %; measured (`cpu`
config, real data, `patient` split): cfal macro-F1 0.766 +- 0.008, accuracy 82.1
+- 0.5 % over 3 runs; ce macro-F1 0.757 +- 0.001, accuracy 82.0 +- 1.6 % over 3
runs; on CPU (2 cores visible), Linux, TF 2.21.0, Keras 3.15.1, 16 min (written
by collect_results.py from `cfal_idc_cpu`).
<!-- cfal_idc:result:end -->

Re-running a command resumes in its `--workdir` (finished jobs are skipped);
`--restart` starts over. Runs on `tfcell.experiments` with the protocol
`tfcell.papers.cfal:IDC`.
"""

import os

from absl import app, flags
from ml_collections import config_flags

# Nothing heavy at import time: `--help` answers without loading TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "..", "configs", "cfal_idc.py"),
    "Config file; variants: paper, cpu, smoke, sweep (e.g. --config=configs/cfal_idc.py:cpu). "
    "Override any value with --config.<key>=<value>.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdirs/cfal_idc", "Output folder; the same command resumes there."
)
_RESTART = flags.DEFINE_boolean("restart", False, "Start over in --workdir instead of resuming.")


def _download(config):
    """`--config.data.download=True` without a root: fetch the data or exit non-zero."""
    from tfcell.experiments import script

    script.download_or_exit(config, ("idc",), os.path.join(_WORKDIR.value, "data"))


def main(argv):
    del argv
    from tfcell.experiments import script  # After flag parsing (fast --help).

    return script.run_script(
        _CONFIG.value, _WORKDIR.value, restart=_RESTART.value, prepare=_download
    )


if __name__ == "__main__":
    app.run(main)
