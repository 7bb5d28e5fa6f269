"""Exclusive cross-entropy for sparse-shot nuclei (Panteli et al., ICCV 2021,
supplement): the protocol of the reproduction.

    NUCLEI  U-Net segmentation and a YOLO-style detector trained from 30 / 60 /
            90 / 100 % of the nuclei of each training tile, cross-entropy
            (unannotated = background) against exclusive cross-entropy
            (unannotated = unknown), same model, schedule and crops
            (`methods.py`, `task.py`); tiles split by patient (`data.py`);
            Dice / AJI and detection F1 beside the supplement's Tables 3 and 4,
            per-fraction curves and overlays (`report.py`).

Its numbers live in `configs/ece_nuclei.py`, its command in
`reproductions/ece_nuclei.py`.
"""

import dataclasses

import pandas as pd

from tfcell.experiments import protocol
from tfcell.experiments import settings as settings_lib
from tfcell.papers.ece import data, methods, report, task

__all__ = ["NUCLEI", "FractionSetting", "NucleiProtocol"]


@dataclasses.dataclass
class FractionSetting(settings_lib.Setting):
    """A `Setting` whose training tiles keep `fraction` of their nuclei."""

    fraction: float = 1.0


class NucleiProtocol(protocol.Protocol):
    """The supplement's comparison (see the module docstring)."""

    docs_marker = "ece_nuclei:measured"

    def __init__(self):
        super().__init__()
        self.task = task.NucleiTask()

    def _table(self, config):
        table = data.tile_table(config)
        split = data.split_tiles(
            table, config.data.val_fraction, config.data.test_fraction, config.seed
        )
        tables, parts, start = [table.reset_index(drop=True)], dict(split), len(table)
        for spec in config.data.get("test_roots", ()) or ():
            name, _, root = spec.rpartition("=")
            extra = data.tile_table(config, root=root).reset_index(drop=True)
            name = name or extra["name"].iloc[0].split("-")[0]
            tables.append(extra)
            parts[f"test:{name}"] = list(range(start, start + len(extra)))
            start += len(extra)
        attrs = dict(table.attrs)
        records = pd.concat(tables, ignore_index=True)
        records.attrs = attrs
        records["label"] = 0
        records.attrs["class_names"] = ("nucleus",)
        return records, parts

    def settings(self, config, repeat):
        records, parts = self._table(config)
        out = []
        for fraction in config.data.fractions:
            out.append(
                FractionSetting(
                    f"frac{int(round(100 * fraction)):03d}",
                    records,
                    dict(parts),
                    ("nucleus",),
                    description=(
                        f"{100 * fraction:.0f} % of the training nuclei; tiles split by "
                        f"patient: train {len(parts['train'])}, val {len(parts['val'])}, "
                        f"test {len(parts['test'])}"
                    ),
                    synthetic=bool(records.attrs.get("synthetic", False)),
                    fraction=float(fraction),
                )  # fmt: skip
            )
        return out

    def methods(self, config):
        unknown = [n for n in config.methods if n not in methods.METHODS]
        if unknown:
            raise ValueError(
                f"Unknown nuclei method(s) {unknown}; known: {sorted(methods.METHODS)}."
            )
        return {n: methods.METHODS[n] for n in config.methods}

    def hparams(self, config, name):
        return dict(config.loss)

    def write_report(self, workdir, config, records, run_info):
        return report.write_report(workdir, config, records, run_info, self)

    def collect(self, name, config, records, run_info):
        return report.collect_section(name, config, records, run_info)

    def result_line(self, config, records, run_info):
        return report.result_line(config, records, run_info)


NUCLEI = NucleiProtocol()
