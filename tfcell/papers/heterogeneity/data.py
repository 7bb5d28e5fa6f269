"""The heterogeneity paper's data: C-NMC 2019 (`paper`), IDC with patients as
subjects (`cpu`), synthetic C-NMC-like cells (`smoke`).

Every table gets two id columns:

    patient   the person: the unit of every split (no patient on two sides)
    subject   the unit of the heterogeneity loss (a subject centre, Eq. 4,
              and one class per subject, Eq. 5)

In C-NMC a subject is a patient with one class (ALL or healthy), so the two
agree. An IDC patient holds benign and carcinoma patches, and Eq. 5 needs one
class per subject, so each patient's patches of each class form one subject
(`<patient>:<class>`); both halves of a patient stay on one side of every split
because splits group by `patient`. The synthetic cells are drawn the same way.
"""

import logging
import os

from tfcell.experiments import settings as settings_lib

__all__ = ["check_contract", "records", "shared_root"]

logger = logging.getLogger("tfcell.papers.heterogeneity")


def shared_root():
    """`../shared/data` next to the repository (the project's real public data)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "..", "..", "shared", "data"))


def _with_ids(table, per_class_subjects):
    table = table.copy()
    attrs = dict(table.attrs)
    table["patient"] = table["subject"].astype(str)
    if per_class_subjects:
        table["subject"] = table["patient"] + ":" + table["label"].astype(str)
    table.attrs = attrs
    return table


def records(config):
    """The record table of `config.data.source` with `patient` and `subject` ids.

    "cnmc": C-NMC 2019 from `config.data.root` (training data and, when present,
    the preliminary test set with its labels: the paper's 101 subjects);
    "idc": the IDC patches of `config.data.root` or `../shared/data/idc`
    (patients as subjects, one subject per patient and class); "synthetic":
    C-NMC-like cells (`tfcell.data.synthetic.white_cells`, two classes, every
    subject with its own stain tint and size offset).
    """
    source = config.data.source
    if source == "cnmc":
        from tfcell.data import cnmc

        if not config.data.root:
            raise ValueError(
                "The paper config reads C-NMC 2019: pass --config.data.root=<folder holding "
                "training_data/ (and validation_data/)>, as published on TCIA "
                "(https://doi.org/10.7937/tcia.2019.dc64i46r)."
            )
        table = cnmc.read_cnmc(config.data.root, include_prelim=config.data.include_prelim)
        mixed = table.groupby("subject")["label"].nunique().gt(1)
        return _with_ids(table, per_class_subjects=bool(mixed.any()))
    if source == "idc":
        from tfcell.data import idc

        root = config.data.root or os.path.join(shared_root(), "idc")
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"No IDC folder at {root!r}: pass --config.data.root=<IDC_regular_ps50_idx5 or "
                "a folder of <patient>/<0|1>/ patches>, or put ../shared/data beside the repo."
            )
        table = idc.read_idc(root)
        table = settings_lib.subsample(table, config.data.get("max_images", 0), config.seed)
        return _with_ids(table, per_class_subjects=True)
    if source == "synthetic":
        from tfcell.data import synthetic

        s = config.synthetic
        table = synthetic.white_cells(
            s.num_images, image_size=config.data.image_size, num_classes=2, domains=1,
            subjects_per_domain=s.subjects, imbalance=s.imbalance, seed=config.seed,
        )  # fmt: skip
        return _with_ids(table, per_class_subjects=True)
    raise ValueError(
        f"config.data.source must be 'cnmc', 'idc' or 'synthetic'; received {source!r}."
    )


def check_contract(config, class_names):
    """The input contract in config.json must name the classes the data has."""
    expected = tuple(config.input_contract.class_names)
    if tuple(class_names) != expected:
        raise ValueError(
            f"The data's classes {tuple(class_names)} differ from config.input_contract."
            f"class_names {expected}; fix configs/heterogeneity_cnmc.py."
        )
