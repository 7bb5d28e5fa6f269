r"""Reproduces the heterogeneity loss for B-ALL cells: the Table 2 ablation (L_CE;
+ class centres; + subject centres; full L_H) on 7 subject-level folds, the
two-stage schedule, 5-crop test-time augmentation and the theta ensemble of the
7 fold models on held-out subjects.

Paper: Goswami et al., "Heterogeneity loss to handle intersubject and
intrasubject variability in cancer", ICLR 2020 workshop AI4AH (arXiv:2003.03295).

    python reproductions/heterogeneity_cnmc.py              # cpu: IDC patients as subjects
    python reproductions/heterogeneity_cnmc.py --config=configs/heterogeneity_cnmc.py:paper \
        --config.data.root=/data/C-NMC_Leukemia --config.model.weights=/w/inception_v3_notop.h5
    python reproductions/heterogeneity_cnmc.py --config=configs/heterogeneity_cnmc.py:smoke

Data: `../shared/data/idc` (cpu), or C-NMC 2019 in its TCIA layout under
`--config.data.root` (paper; subject ids from the file names).

<!-- heterogeneity_cnmc:result:start -->
Result: paper (C-NMC final test): L_H ensemble (theta_0.95) weighted-F1 95.26 %.
Measured (`cpu` config, real data, held-out patients): heterogeneity ensemble
wF1 81.05 % (fold models 80.84 +- 1.18 %); ce ensemble wF1 85.92 % (fold models
84.89 +- 0.95 %); CPU (2 cores visible), Linux, TF 2.21.0, Keras 3.15.1, 40 min
(written by collect_results.py from `heterogeneity_cnmc_cpu`).
<!-- heterogeneity_cnmc:result:end -->

New cells, with a finished run's 7 fold models (5-crop TTA, theta 0.95):

    from tfcell.papers.heterogeneity import predict
    labels, scores = predict.predict_images("workdirs/heterogeneity_cnmc", paths)

Re-running a command resumes in its `--workdir` (finished jobs are skipped);
`--restart` starts over. Runs on `tfcell.experiments` with the protocol
`tfcell.papers.heterogeneity:CNMC`.
"""

import os

from absl import app, flags
from ml_collections import config_flags

# Nothing heavy at import time: `--help` answers without loading TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "..", "configs", "heterogeneity_cnmc.py"),
    "Config file; variants: cpu (default), paper, smoke (e.g. "
    "--config=configs/heterogeneity_cnmc.py:paper). Override any value with --config.<key>=<value>.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdirs/heterogeneity_cnmc", "Output folder; the same command resumes there."
)
_RESTART = flags.DEFINE_boolean("restart", False, "Start over in --workdir instead of resuming.")


def main(argv):
    del argv
    from tfcell.experiments import script  # After flag parsing (fast --help).

    return script.run_script(_CONFIG.value, _WORKDIR.value, restart=_RESTART.value)


if __name__ == "__main__":
    app.run(main)
