"""CFAL (Mahbub et al., IEEE JBHI 2024): the protocol of its two studies.

    IDC  breast IDC patches, AlexNet variant: Tables IV, IX, X, XI
    CRC  Kather colorectal tissue, VGG19 (or CCT): Tables V, VI, XII, XIII, XIV

Each is a `tfcell.experiments.Protocol`: settings (`settings.py`), the losses
compared (`methods.py`), three ensembles over calibrated probabilities
(Sec. III-C) and the report tables (`report.py`). Its numbers live in
`configs/cfal_idc.py` and `configs/cfal_crc.py`, its commands in
`reproductions/cfal_idc.py` and `reproductions/cfal_crc.py`.
"""

from tfcell.evaluation import ensembles
from tfcell.experiments import protocol, tasks
from tfcell.papers.cfal import methods, report, settings

__all__ = ["CRC", "IDC", "CFALProtocol"]


class CFALProtocol(protocol.Protocol):
    """The CFAL comparison on one dataset.

    Args:
        settings_fn: `(config, repeat) -> [Setting]` (`settings.idc_settings`
            or `settings.crc_settings`).
        prepare_config: optional `(config) -> None` run before anything (CRC:
            CPU scale on synthetic data).
    """

    docs_marker = "cfal:measured"

    def __init__(self, settings_fn, prepare_config=None):
        super().__init__()
        self._settings_fn = settings_fn
        if prepare_config is not None:
            self.prepare_config = prepare_config

    def settings(self, config, repeat):
        return self._settings_fn(config, repeat)

    def methods(self, config):
        names = list(dict.fromkeys(list(config.methods) + list(config.ablation)))
        unknown = [n for n in names if n not in methods.METHODS]
        if unknown:
            raise ValueError(f"Unknown CFAL method(s) {unknown}; known: {sorted(methods.METHODS)}.")
        return {n: methods.METHODS[n] for n in names}

    def augmentation(self, config, seed):
        """None: the paper mentions no augmentation. `training.augment=True`
        adds the 8 flips and quarter turns of a square patch (histology has no
        canonical orientation; `tfcell.data.augmentation.RandomDihedral`)."""
        if not config.training.get("augment"):
            return None
        from tfcell.data import augmentation

        return augmentation.RandomDihedral()

    def combine(self, setting, outputs, config):
        """The paper's ensembles (Sec. III-C) over the members' calibrated test
        probabilities (each member's temperature fitted on validation data)."""
        members = [m for m in config.ensemble.members if outputs.get(m) is not None]
        if len(members) < 2:
            return {}
        probabilities = [outputs[m]["test_probabilities"] for m in members]
        labels = outputs[members[0]]["test_labels"]
        out = {}
        for rule in config.ensemble.rules:
            _, scores = ensembles.ensemble(probabilities, rule)
            out[f"ensemble_{rule}"] = [
                {
                    "method": f"ensemble_{rule}",
                    "title": f"Ensemble: {rule}",
                    "kind": "ensemble",
                    "members": members,
                    "test_set": "test",
                    "num_test": len(labels),
                    **tasks.evaluate_scores(labels, scores, setting.num_classes),
                }
            ]
        return out

    def write_report(self, workdir, config, records, run_info):
        return report.write_report(workdir, config, records, run_info)

    def collect(self, name, config, records, run_info):
        return report.collect_section(name, config, records, run_info)

    def result_line(self, config, records, run_info):
        return report.result_line(config, records, run_info)


IDC = CFALProtocol(settings.idc_settings)
CRC = CFALProtocol(settings.crc_settings, prepare_config=settings.apply_synthetic_scale)
