r"""Reproduces exclusive cross-entropy for sparse-shot nuclei: U-Net segmentation
and a YOLO-style detector trained from 30 / 60 / 90 / 100 % of the nuclei of each
training tile, cross-entropy (unannotated = background) against exclusive
cross-entropy (unannotated = unknown).

Paper: Panteli et al., "Sparse-shot Learning with Exclusive Cross-Entropy for
Extremely Many Localisations", ICCV 2021 (supplement: Tables 2-4).

    python reproductions/ece_nuclei.py              # cpu: ../shared/data/nuclei/monuseg_train
    python reproductions/ece_nuclei.py --config=configs/ece_nuclei.py:paper --config.data.root=/data/MoNuSeg
    python reproductions/ece_nuclei.py --config.data.test_roots='("monuseg_test=/data/MoNuSegTest",)'
    python reproductions/ece_nuclei.py --config=configs/ece_nuclei.py:smoke

<!-- ece_nuclei:result:start -->
Result at 30 % of the nuclei: paper (TNBC) ECE Dice 0.80, AJI 0.58; CE 0.43,
0.24. Measured (`cpu` config, real data): ECE Dice 0.527 +- 0.107, AJI 0.028 +-
0.032; CE Dice 0.000 +- 0.000, AJI 0.000 +- 0.000; CPU (2 cores visible), Linux,
TF 2.21.0, Keras 3.15.1, 44 min (written by collect_results.py from
`ece_nuclei_cpu`).
<!-- ece_nuclei:result:end -->

Whole tiles of any size with a saved U-Net:
`tfcell.evaluation.predict_instances(tfcell.models.load_model(path), image, tile=128)`.
Re-running a command resumes in its `--workdir`; `--restart` starts over. Runs on
`tfcell.experiments` with the protocol `tfcell.papers.ece:NUCLEI`.
"""

import os

from absl import app, flags
from ml_collections import config_flags

# Nothing heavy at import time: `--help` answers without loading TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "..", "configs", "ece_nuclei.py"),
    "Config file; variants: cpu (default), paper, smoke (e.g. "
    "--config=configs/ece_nuclei.py:paper). Override any value with --config.<key>=<value>.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdirs/ece_nuclei", "Output folder; the same command resumes there."
)
_RESTART = flags.DEFINE_boolean("restart", False, "Start over in --workdir instead of resuming.")


def main(argv):
    del argv
    from tfcell.experiments import script  # After flag parsing (fast --help).

    return script.run_script(_CONFIG.value, _WORKDIR.value, restart=_RESTART.value)


if __name__ == "__main__":
    app.run(main)
