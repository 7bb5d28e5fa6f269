r"""Reproduces AE-CFE: unsupervised cross-domain features of single white cells
(detector -> ROI features -> two-stage autoencoder with domain alignment), a
random forest trained on one domain and tested on every domain (Table 3.2), the
supervised CNN oracle (Table 3.3) and the bottleneck study (Table 3.1).

Paper: Salehi et al., "Unsupervised Cross-Domain Feature Extraction for Single
Blood Cell Image Classification", MICCAI 2022; R. Salehi's thesis (2023), Sec.
3.4, Tables 3.1-3.3, Fig. 3.14.

    python reproductions/aecfe_wbc.py              # cpu: ../shared/data PBC, BCCD, JTSC
    python reproductions/aecfe_wbc.py --config=configs/aecfe_wbc.py:paper --config.data.root=/data/wbc
    python reproductions/aecfe_wbc.py --config.model.resnet_weights=/models/resnet50_notop.h5
    python reproductions/aecfe_wbc.py --config.data.extra_test_domains='("lab=/data/my_lab",)'
    python reproductions/aecfe_wbc.py --config=configs/aecfe_wbc.py:smoke

<!-- aecfe_wbc:result:start -->
Cross-domain mean accuracy (Table 3.2): thesis AE-CFE 40.2 %. Measured (`cpu`
config, real data, 3 runs): AE-CFE 37.6 +- 1.9 %, AE-RF 31.9 +- 1.0 %, R-CNN-RF
39.0 +- 1.3 %, CNN oracle 18.7 +- 4.0 %; CPU (2 cores visible), Linux, TF
2.21.0, Keras 3.15.1, 52 min (written by collect_results.py from
`aecfe_wbc_cpu`).
<!-- aecfe_wbc:result:end -->

A folder of cell images to latent codes with a saved run:
`tfcell.papers.aecfe.predict.encode_folder(workdir, folder)`. Re-running a
command resumes in its `--workdir` (the detector and every finished
autoencoder are reused); `--restart` starts over. Runs on `tfcell.experiments`
with the protocol `tfcell.papers.aecfe:WBC`.
"""

import os

from absl import app, flags
from ml_collections import config_flags

# Nothing heavy at import time: `--help` answers without loading TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "..", "configs", "aecfe_wbc.py"),
    "Config file; variants: cpu (default), paper, smoke (e.g. "
    "--config=configs/aecfe_wbc.py:paper). Override any value with --config.<key>=<value>.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdirs/aecfe_wbc", "Output folder; the same command resumes there."
)
_RESTART = flags.DEFINE_boolean("restart", False, "Start over in --workdir instead of resuming.")


def main(argv):
    del argv
    from tfcell.experiments import script  # After flag parsing (fast --help).

    return script.run_script(_CONFIG.value, _WORKDIR.value, restart=_RESTART.value)


if __name__ == "__main__":
    app.run(main)
