r"""Reproduces the colorectal cancer (CRC) study of the CFAL paper: VGG19 with
six losses, the ablation, three ensembles and the long-tailed variant.

Paper: Mahbub et al., "Center-Focused Affinity Loss for Class Imbalance
Histology Image Classification", IEEE JBHI 28(2), 2024; Tables V, VI, IX, X,
XII, XIII (and XIV with `:cct`), Figs. 5, 7 (Kather et al. 2019:
NCT-CRC-HE-100K for training, CRC-VAL-HE-7K for testing).

    python reproductions/cfal_crc.py            # embedded synthetic data, minutes on a CPU
    python reproductions/cfal_crc.py --config.data.root=/data/kather --workdir=workdirs/crc
    python reproductions/cfal_crc.py --config=configs/cfal_crc.py:cct --config.data.root=...
    python reproductions/cfal_crc.py --config=configs/cfal_crc.py:sweep --config.data.root=...

Data: `--config.data.root` (holding NCT-CRC-HE-100K/ and CRC-VAL-HE-7K/ as
published on Zenodo 1214456), or `--config.data.download=True` when online;
otherwise synthetic CRC-like tiles at CPU scale with a loud banner.

<!-- cfal_crc:result:start -->
No run collected yet: `python reproductions/collect_results.py <workdir> --update_docs`.
<!-- cfal_crc:result:end -->

Re-running a command resumes in its `--workdir` (finished jobs are skipped);
`--restart` starts over. Runs on `tfcell.experiments` with the protocol
`tfcell.papers.cfal:CRC`.
"""

import os

from absl import app, flags
from ml_collections import config_flags

# Nothing heavy at import time: `--help` answers without loading TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "..", "configs", "cfal_crc.py"),
    "Config file; variants: paper, cpu, smoke, sweep, cct (e.g. --config=configs/cfal_crc.py:cpu). "
    "Override any value with --config.<key>=<value>.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdirs/cfal_crc", "Output folder; the same command resumes there."
)
_RESTART = flags.DEFINE_boolean("restart", False, "Start over in --workdir instead of resuming.")


def _download(config):
    """`--config.data.download=True` without a root: fetch the data or exit non-zero."""
    from tfcell.experiments import script

    script.download_or_exit(
        config, ("kather_100k", "kather_7k"), os.path.join(_WORKDIR.value, "data")
    )


def main(argv):
    del argv
    from tfcell.experiments import script  # After flag parsing (fast --help).

    return script.run_script(
        _CONFIG.value, _WORKDIR.value, restart=_RESTART.value, prepare=_download
    )


if __name__ == "__main__":
    app.run(main)
