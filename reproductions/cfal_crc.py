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
"""

import os

from absl import app, flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import tfcell  # noqa: E402, F401  (registers the losses and layers)
from tfcell.experiments import data, script  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "..", "configs", "cfal_crc.py"),
    "Config file (variants: paper, cpu, smoke, sweep, cct).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/cfal_crc", "Output folder.")


def _resolve_download(config):
    """`--config.data.download=True` and no root: fetch Kather 100K and 7K when online."""
    if config.data.root or not config.data.download:
        return
    from tfcell.data import download

    with config.unlocked():
        root = os.path.join(_WORKDIR.value, "data")
        try:
            for name in ("kather_100k", "kather_7k"):
                download.fetch(name, root)
        except Exception as error:  # Offline or no URL: say so, fall back to synthetic.
            print(f"Download failed ({error}); falling back to synthetic data.", flush=True)
            return
        config.data.root = root


def main(argv):
    del argv
    return script.run_script(
        _CONFIG.value,
        _WORKDIR.value,
        data.crc_settings,
        prepare=_resolve_download,
        synthetic_scale=True,
    )


if __name__ == "__main__":
    app.run(main)
