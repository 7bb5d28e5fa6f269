"""BoDA for white-cell domain generalisation (Umer et al. 2023 poster; Yang et
al., ECCV 2022): the protocols of the reproduction.

    WBC  ERM, DANN, CORAL, MMD, BoDA and "Ours+" across hospital domains:
         leave-one-domain-out and the poster's k-fold protocol with an unseen
         domain (`settings.py`, `methods.py`), the poster's two tables, rare-class
         recall, paired tests against ERM, confusion matrices and a feature-space
         figure (`report.py`).
    PBC  the standard single-domain benchmark users compare against: PBC
         (Acevedo-20) 8 classes, ERM, beside MedMNIST v2 BloodMNIST.

Its numbers live in `configs/boda_wbc.py`, its command in
`reproductions/boda_wbc.py`.
"""

from tfcell.experiments import protocol
from tfcell.papers.boda import methods, pbc, report, settings

__all__ = ["PBC", "WBC", "BoDAProtocol", "PBCProtocol"]


def _augmentation(config):
    """`config.training.augment`, the same for every method:

    "jitter" (the domain runs): mdlt's training augmentation (`mdlt/dataset/
    datasets.py`: ColorJitter(0.3, 0.3, 0.3, 0.3), RandomGrayscale(0.1),
    horizontal flip, RandomResizedCrop(0.7, 1)) with tfcell's fast stateless
    ops: brightness shift up to 0.3 x 255 (torchvision multiplies by [0.7,
    1.3]), contrast and saturation factors in [0.7, 1.3], hue shift up to 0.3
    of the colour circle, grey with probability 0.1, both flips and any
    rotation (a cell has no orientation) instead of the resized crop (the
    field of view is fixed in micrometres, `tfcell.data.physical_scale`).
    "dihedral" (the PBC in-domain benchmark: one scanner, no stain shift to
    cover): the 8 flips and quarter turns, exact pixels. "" : none.
    """
    augment = config.training.get("augment")
    if not augment:
        return None
    from tfcell.data import augmentation

    if augment == "dihedral":
        return augmentation.RandomDihedral()
    if augment not in (True, "jitter"):
        raise ValueError(
            f"config.training.augment must be 'jitter', 'dihedral' or ''; received {augment!r}."
        )
    return augmentation.PerImageAugmentation(
        flips=True, rotation=180.0, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.3,
        grayscale=0.1,
    )  # fmt: skip


class BoDAProtocol(protocol.Protocol):
    """The poster's comparison (see the module docstring)."""

    docs_marker = "boda_wbc:measured"

    def __init__(self):
        super().__init__()
        self._records = {}  # The decoded, scaled images, shared by every repeat.

    def settings(self, config, repeat):
        key = config.to_json() if hasattr(config, "to_json") else repr(config)
        cache = self._records.setdefault(key, {})
        if len(self._records) > 1:  # Another config in this process: keep only its data.
            self._records = {key: cache}
        return settings.wbc_settings(config, repeat, cache)

    def methods(self, config):
        unknown = [n for n in config.methods if n not in methods.METHODS]
        if unknown:
            raise ValueError(f"Unknown BoDA method(s) {unknown}; known: {sorted(methods.METHODS)}.")
        return {n: methods.METHODS[n] for n in config.methods}

    def augmentation(self, config, seed):
        return _augmentation(config)

    def write_report(self, workdir, config, records, run_info):
        return report.write_report(workdir, config, records, run_info, self)

    def collect(self, name, config, records, run_info):
        return report.collect_section(name, config, records, run_info)

    def result_line(self, config, records, run_info):
        return report.result_line(config, records, run_info)


class PBCProtocol(protocol.Protocol):
    """PBC 8-class in-domain classification with ERM (the `pbc` config)."""

    docs_marker = "boda_pbc:measured"

    def settings(self, config, repeat):
        return pbc.pbc_settings(config, repeat)

    def methods(self, config):
        return {n: methods.METHODS[n] for n in config.methods}

    def augmentation(self, config, seed):
        return _augmentation(config)

    def write_report(self, workdir, config, records, run_info):
        return pbc.write_pbc_report(workdir, config, records, run_info)

    def collect(self, name, config, records, run_info):
        return pbc.pbc_section(name, config, records, run_info)

    def result_line(self, config, records, run_info):
        return pbc.pbc_result_line(config, records, run_info)


WBC = BoDAProtocol()
PBC = PBCProtocol()
