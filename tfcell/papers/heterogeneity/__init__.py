"""Heterogeneity loss for B-ALL cells (Goswami et al., ICLR 2020 AI4AH
workshop): the protocol of the reproduction.

    CNMC  the Table 2 ablation (L_CE; + L_class; + L_subject; full L_H) on 7
          subject-level folds stratified by class (`settings.py`), one
          Inception-v3 per fold with the two-stage schedule (`methods.py`),
          random-crop training and 5-crop TTA (`task.py`), the theta ensemble
          of the 7 fold models on held-out subjects (Sec. 5.2), subject-level
          results and paired tests against L_CE (`report.py`), per-stage
          curves and a t-SNE of one validation fold (`figures.py`).

Its numbers live in `configs/heterogeneity_cnmc.py`, its command in
`reproductions/heterogeneity_cnmc.py`; `predict.py` turns a saved run into
one call on new images.
"""

import numpy as np

from tfcell.evaluation import ensembles
from tfcell.experiments import protocol, tasks
from tfcell.papers.heterogeneity import data, methods, predict, report, settings, task

__all__ = ["CNMC", "HeterogeneityProtocol", "predict"]


def _augmentation(config):
    """`config.training.augment`: "paper" (Sec. 5.1: horizontal and vertical
    flips, rotation, hue / saturation / contrast / brightness, then the random
    crop with a zoom of +-`config.training.zoom`, which with the crop position
    is the paper's affine transform without shear), or "" (crops only)."""
    augment = config.training.get("augment")
    if not augment:
        return None
    if augment != "paper":
        raise ValueError(f"config.training.augment must be 'paper' or ''; received {augment!r}.")
    from tfcell.data import augmentation

    return augmentation.PerImageAugmentation(
        flips=True, rotation=180.0, brightness=0.1, contrast=0.2, hue=0.05, saturation=0.2
    )


class HeterogeneityProtocol(protocol.Protocol):
    """The paper's comparison (see the module docstring)."""

    docs_marker = "heterogeneity_cnmc:measured"

    def __init__(self):
        super().__init__()
        self.task = task.HeterogeneityTask()
        self._records = {}

    def _table(self, config):
        key = config.to_json() if hasattr(config, "to_json") else repr(config)
        if key not in self._records:
            self._records = {key: data.records(config)}  # Keep one config's table.
        return self._records[key]

    def settings(self, config, repeat):
        table = self._table(config)
        data.check_contract(config, table.attrs.get("class_names", ()))
        return settings.cnmc_settings(table, config, repeat)

    def methods(self, config):
        unknown = [n for n in config.methods if n not in methods.METHODS]
        if unknown:
            raise ValueError(
                f"Unknown heterogeneity method(s) {unknown}; known: {sorted(methods.METHODS)}."
            )
        return {n: methods.METHODS[n] for n in config.methods}

    def augmentation(self, config, seed):
        return _augmentation(config)

    def combined_names(self, config):
        return [f"{m}_ensemble" for m in config.methods]

    def combine_repeat(self, settings_list, outputs, config):
        """The ensemble of Sec. 5.2 for every method: its fold models' 5-crop
        probabilities on the shared test patients, combined by each rule of
        `config.ensemble.rules` (the paper: theta 0.95 and 0.98)."""
        test = settings_list[0].parts["test"]
        for s in settings_list[1:]:
            if not np.array_equal(s.parts["test"], test):
                raise AssertionError("The fold settings' test parts differ; no ensemble.")
        patients = settings_list[0].records["patient"].astype(str).to_numpy()[test]
        num_classes = settings_list[0].num_classes
        out = {}
        for method in config.methods:
            per_fold = [outputs[s.name][method] for s in settings_list]
            if any(o is None for o in per_fold):
                continue
            labels = per_fold[0]["test_labels"]
            # Raw (uncalibrated) averaged 5-crop confidences: theta thresholds them.
            probabilities = [task._softmax(o["test_scores"].astype("float64")) for o in per_fold]
            records = []
            for rule in config.ensemble.rules:
                predictions, scores = ensembles.ensemble(probabilities, rule)
                records.append(
                    {
                        "method": method,
                        "title": methods.METHODS[method].title,
                        "kind": "ensemble",
                        "rule": rule,
                        "test_set": "test",
                        "num_models": len(per_fold),
                        "num_test": len(labels),
                        **tasks.evaluate_scores(labels, scores, num_classes),
                        **task.subject_metrics(patients, labels, predictions),
                    }
                )
            out[f"{method}_ensemble"] = records
        return out

    def write_report(self, workdir, config, records, run_info):
        return report.write_report(workdir, config, records, run_info)

    def collect(self, name, config, records, run_info):
        return report.collect_section(name, config, records, run_info)

    def result_line(self, config, records, run_info):
        return report.result_line(config, records, run_info)


CNMC = HeterogeneityProtocol()
