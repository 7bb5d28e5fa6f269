"""The compared methods of the exclusive cross-entropy paper: one network per
task, trained with cross-entropy or with exclusive cross-entropy.

    name      network                   loss
    unet_ce   tfcell.models.unet        SparseCategoricalCrossentropy: every pixel
                                        outside the kept nuclei is background
                                        (the usual practice the paper argues against)
    unet_ece  tfcell.models.unet        tfcell.losses.ExclusiveCrossentropyLoss: the
                                        same targets, but pixels outside the kept
                                        nuclei are unannotated (label 0 =
                                        `unannotated_label`), sampled into the loss
                                        as the annealed thresholds allow
    yolo_ce   tfcell.models.yolo_detector  DetectionLoss(exclusive=False)
    yolo_ece  tfcell.models.yolo_detector  DetectionLoss(exclusive=True)

Same model, schedule, data and crops for CE and ECE; only the loss differs.
The dropped nuclei are never marked anywhere: neither loss knows where they
are (no ignore cells, no ignore pixels), as in the sparse-shot setting.
The annealing epochs (`config.loss.exclusivity_epoch`, `sampling_epoch`,
`temperature`) are the supplement's 50, 150 and 10 of 300 epochs, scaled to
the config's schedule in the same proportion.
"""

import dataclasses

import keras

from tfcell import losses, models, training
from tfcell.experiments import methods

__all__ = ["METHODS", "NucleiMethod"]


class NucleiMethod(methods.Method):
    """A segmentation or detection network with CE or ECE (see the module docstring)."""

    batches = "nuclei"

    def __init__(self, title, kind, exclusive):
        super().__init__(title)
        if kind not in ("segmentation", "detection"):
            raise ValueError(f"kind must be 'segmentation' or 'detection'; received {kind!r}.")
        self.kind = kind
        self.exclusive = bool(exclusive)

    def build(self, info, hp, config):
        model_cfg = config.model
        if self.kind == "segmentation":
            model = models.unet(
                (None, None, 3), num_classes=2, width=int(model_cfg.unet_width),
                depth=int(model_cfg.unet_depth), batch_norm=bool(model_cfg.batch_norm),
            )  # fmt: skip
        else:
            model = models.yolo_detector((None, None, 3), width=int(model_cfg.yolo_width))
        annealing = {
            "exclusivity_epoch": float(hp["exclusivity_epoch"]),
            "sampling_epoch": float(hp["sampling_epoch"]),
            "temperature": float(hp["temperature"]),
            "seed": int(hp.get("seed", 0)),
        }
        if self.kind == "segmentation":
            if self.exclusive:
                loss = losses.ExclusiveCrossentropyLoss(unannotated_label=0, **annealing)
            else:
                loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        else:
            loss = losses.DetectionLoss(
                lambda_background=float(hp["lambda_background"]),
                lambda_objects=float(hp["lambda_objects"]),
                exclusive=self.exclusive,
                **annealing,
            )

        def callbacks(model, data):
            return [training.EpochVariableCallback(loss)] if hasattr(loss, "epoch") else []

        return methods.Built(model, loss, "softmax", 1.0, callbacks)


@dataclasses.dataclass(frozen=True)
class _Spec:
    title: str
    kind: str
    exclusive: bool


_SPECS = {
    "unet_ce": _Spec("U-Net, cross-entropy", "segmentation", False),
    "unet_ece": _Spec("U-Net, exclusive cross-entropy", "segmentation", True),
    "yolo_ce": _Spec("YOLO, cross-entropy", "detection", False),
    "yolo_ece": _Spec("YOLO, exclusive cross-entropy", "detection", True),
}
METHODS = {name: NucleiMethod(s.title, s.kind, s.exclusive) for name, s in _SPECS.items()}
