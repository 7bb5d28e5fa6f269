r"""Reproduces BoDA for white-cell domain generalisation: ERM, DANN, CORAL, MMD,
BoDA and "Ours+" across hospital domains, with an unseen-domain test, and the
PBC in-domain benchmark beside MedMNIST BloodMNIST.

Paper: Umer et al., "Imbalanced Domain Generalization for Robust Single Cell
Classification in Hematological Cytomorphology", ICLR 2023 workshop poster
(its two tables: five-fold CV on Acevedo-20 + Matek-19, INT-20 unseen); BoDA:
Yang et al., ECCV 2022.

    python reproductions/boda_wbc.py              # cpu: PBC, BCCD, JTSC of ../shared/data
    python reproductions/boda_wbc.py --config=configs/boda_wbc.py:paper --config.data.root=/data/wbc
    python reproductions/boda_wbc.py --config=configs/boda_wbc.py:pbc --workdir=workdirs/boda_pbc
    python reproductions/boda_wbc.py --config.data.extra_test_domains='("mylab=/data/mylab",)'

Data: `../shared/data` (cpu), or `--config.data.root` holding Matek-19
(`AML-Cytomorphology_LMU/`), Acevedo-20 (`PBC_dataset_normal_DIB/`) and INT-20
(`INT-20/`) for `paper`; `--config.data.extra_test_domains` adds folder-per-class
sets tested as unseen domains by every model.

<!-- boda_wbc:result:start -->
Result: poster (INT-20 unseen): BoDA F1-micro 0.66, F1-macro 0.43; ERM 0.64,
0.40. Measured (`cpu` config, real data, bccd unseen): boda F1-micro 0.144 +-
0.026, F1-macro 0.160 +- 0.030; erm F1-micro 0.139 +- 0.023, F1-macro 0.157 +-
0.024; CPU (2 cores visible), Linux, TF 2.21.0, Keras 3.15.1, 77 min (written by
collect_results.py from `boda_wbc_cpu`).
<!-- boda_wbc:result:end -->

<!-- boda_pbc:result:start -->
Result (PBC 8 classes, in-domain): test accuracy 0.974 at 64 px; BloodMNIST
anchors (28 px): ResNet-18 0.958, AutoML Vision 0.966; CPU (2 cores visible),
Linux, TF 2.21.0, Keras 3.15.1, 9 min (written by collect_results.py from
`boda_pbc`).
<!-- boda_pbc:result:end -->

Re-running a command resumes in its `--workdir` (finished jobs are skipped);
`--restart` starts over. Runs on `tfcell.experiments` with the protocols
`tfcell.papers.boda:WBC` and `tfcell.papers.boda:PBC`.
"""

import os

from absl import app, flags
from ml_collections import config_flags

# Nothing heavy at import time: `--help` answers without loading TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "..", "configs", "boda_wbc.py"),
    "Config file; variants: cpu (default), paper, pbc, smoke (e.g. "
    "--config=configs/boda_wbc.py:paper). Override any value with --config.<key>=<value>.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdirs/boda_wbc", "Output folder; the same command resumes there."
)
_RESTART = flags.DEFINE_boolean("restart", False, "Start over in --workdir instead of resuming.")


def main(argv):
    del argv
    from tfcell.experiments import script  # After flag parsing (fast --help).

    return script.run_script(_CONFIG.value, _WORKDIR.value, restart=_RESTART.value)


if __name__ == "__main__":
    app.run(main)
