"""The loss configurations of Goswami et al. Table 2, each a
`tfcell.training.HeterogeneityTrainer` with the two-stage schedule.

    name              loss (Eq. 1)                                   Table 2 row
    ce                L_CE                                           1
    ce_class          L_CE + l1 L_class                              2
    ce_subject_class  L_CE + l1 L_class + l2 L_subject               3
    heterogeneity     L_H = L_CE + l1 L_class + l2 L_subject         4
                            + l3 L_subject-class

All four are one trainer with some weights set to 0, so they share the
featurizer (the config's backbone; the paper: Inception-v3), the linear
classifier, the data, the crops and the schedule: only the loss differs.
`config.loss.<name>` holds `lambda_class`, `lambda_subject` and
`lambda_subject_class` (the paper: 0.05, 0.05, 0.005, Sec. 5.1).

The schedule (`tfcell.training.TwoStageSchedule`, Sec. 5.1): Adam at 1e-3
while the training loss improves, the best checkpoint resumed at 1e-5
(`config.schedule`). The centres take their own SGD step
(`config.centers.learning_rate`, `HeterogeneityTrainer(center_learning_rate=)`;
0: learned by the model's Adam). Subject ids are the run's global ids
(`Setting.id_maps()`); `subject_labels` gives each training subject its class
and -1 to validation and test subjects, which have no centre (their samples
enter L_CE and L_class only; see `HeterogeneityTrainer`).
"""

import numpy as np

from tfcell import training
from tfcell.experiments import methods

__all__ = ["METHODS", "make_trainer"]

_LAMBDAS = ("lambda_class", "lambda_subject", "lambda_subject_class")


def make_trainer(featurizer, classifier, info, hp, subject_labels, center_learning_rate=None):
    return training.HeterogeneityTrainer(
        featurizer, classifier, num_classes=info.num_classes, subject_labels=subject_labels,
        lambda_class=float(hp["lambda_class"]), lambda_subject=float(hp["lambda_subject"]),
        lambda_subject_class=float(hp["lambda_subject_class"]),
        center_learning_rate=center_learning_rate,
    )  # fmt: skip


class HeterogeneityMethod(methods.TrainerMethod):
    """A `TrainerMethod` whose trainer knows the training subjects' classes.

    `build` reads them from `config` only through `DataInfo`, which does not
    carry per-subject classes; the task hands them over with
    `with_subject_labels` before `build` (see `HeterogeneityProtocol`).
    """

    def __init__(self, title):
        super().__init__(title, self._make, self._callbacks, required=_LAMBDAS)
        self.subject_labels = None
        self.schedule = None
        self.center_learning_rate = None

    def _make(self, featurizer, classifier, info, hp):
        if self.subject_labels is None:
            raise RuntimeError(
                f"{self.title}: the training subjects' classes were not set; the "
                "heterogeneity protocol sets them per setting (with_subject_labels)."
            )
        return make_trainer(
            featurizer, classifier, info, hp, self.subject_labels, self.center_learning_rate
        )

    def _callbacks(self, model, data, hp):
        s = self.schedule
        return [
            training.TwoStageSchedule(
                stage1_lr=float(s.stage1_lr), stage2_lr=float(s.stage2_lr), monitor=s.monitor,
                patience=int(s.patience), min_delta=float(s.get("min_delta", 0.0)),
                stage1_max_epochs=(int(s.stage1_max_epochs) if s.get("stage1_max_epochs")
                                   else None),
            )
        ]  # fmt: skip

    def with_subject_labels(self, subject_labels, schedule, center_learning_rate=None):
        """A copy bound to one setting's training subjects, the config's schedule
        and centre learning rate (`config.centers.learning_rate`, 0 = None)."""
        bound = HeterogeneityMethod(self.title)
        bound.subject_labels = [int(v) for v in np.asarray(subject_labels).tolist()]
        bound.schedule = schedule
        bound.center_learning_rate = float(center_learning_rate) if center_learning_rate else None
        return bound


METHODS = {
    "ce": HeterogeneityMethod("L_CE"),
    "ce_class": HeterogeneityMethod("L_CE + L_class"),
    "ce_subject_class": HeterogeneityMethod("L_CE + L_subject + L_class"),
    "heterogeneity": HeterogeneityMethod("L_H (ours)"),
}
