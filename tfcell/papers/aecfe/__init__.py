"""AE-CFE for white-cell feature extraction across domains (Salehi et al., MICCAI
2022; Salehi 2023 thesis): detect each white cell, pool its ROI features, encode
them with the domain-aligned autoencoder, and classify across domains with a
random forest.

    WBC       the thesis's Sec. 3.4 protocol: every domain split 80 / 20 per run;
              one detector per run, one autoencoder per run and method (AE-RF,
              ND-AE-DA, AAE-DA, AE-CFE; the training 80 % of every domain, no
              labels); a random forest (max_depth 16) trained on one domain's
              80 % and tested on the 20 % of every domain (Table 3.2), the
              supervised CNN oracle (Table 3.3) and the bottleneck study (Table
              3.1); settings `from_<domain>` (`task.py`, `methods.py`).
    masks     the JTSC crops with their nucleus/cytoplasm masks (0 / 128 / 255),
              on the field of view every domain is read at.
    detector  the documented substitute for the paper's Mask R-CNN: a U-Net cell
              segmenter trained on the JTSC nucleus/cytoplasm masks, the central
              cell of each crop, its box, and its ROI features `h_i`.
    cells     the detector stage of a run (cached in `<workdir>/detector/`).
    report    Tables 3.1-3.3 beside the thesis, the detector's Dice and detected
              fraction, t-SNE of the latent codes and reconstructions (`figures`).
    predict   `encode_folder(workdir, folder)`: a folder of cell images -> codes.

Its numbers live in `configs/aecfe_wbc.py`, its command in
`reproductions/aecfe_wbc.py`.
"""

import dataclasses

import numpy as np

from tfcell.experiments import protocol
from tfcell.experiments import settings as settings_lib
from tfcell.papers.aecfe import data, methods, report, task

__all__ = ["WBC", "AECFEProtocol", "AECFESetting"]


@dataclasses.dataclass
class AECFESetting(settings_lib.Setting):
    """A `Setting` whose forest trains on `source`; `autoencoder_rows` are the
    training 80 % of every domain (the autoencoders' cells) and `table` the
    run's `data.RunTable`."""

    source: str = ""
    repeat: int = 0
    autoencoder_rows: np.ndarray = None
    table: object = None


class AECFEProtocol(protocol.Protocol):
    """The thesis's comparison (see the module docstring)."""

    docs_marker = "aecfe_wbc:measured"

    def __init__(self):
        super().__init__()
        self.task = task.AECFETask()
        self._tables = {}

    def table(self, config):
        """The run's `data.RunTable`, read once per config in this process."""
        key = config.to_json() if hasattr(config, "to_json") else repr(config)
        if key not in self._tables:
            self._tables = {key: data.load_table(config)}  # One config at a time.
        return self._tables[key]

    def settings(self, config, repeat):
        table = self.table(config)
        records = table.records
        train, test = data.split_rows(
            records, table.hashes, config.data.test_fraction, seed=config.seed + repeat
        )
        domains = records["domain"].astype(str).to_numpy()
        present = set(domains)
        missing = [d for d in config.data.domains if d not in present]
        if missing and not table.synthetic:
            raise ValueError(f"config.data.domains {missing} have no image in the run's data.")
        order = [d for d in config.data.domains if d in present]
        order += sorted(present - set(order))  # Extra test domains last.
        tests = {f"test:{d}": test[domains[test] == d] for d in order}
        out = []
        for source in order:
            if source.startswith(data.EXTRA_PREFIX):
                continue  # A user's extra domain is a target only.
            rows = train[domains[train] == source]
            name = f"from_{source}"
            data.check_disjoint(rows, tests, table.hashes, f"{name} repeat {repeat} forest")
            data.check_disjoint(train, tests, table.hashes, f"repeat {repeat} autoencoders")
            out.append(
                AECFESetting(
                    name,
                    records,
                    {"train": rows, "val": np.zeros(0, "int64"), **tests},
                    tuple(records.attrs["class_names"]),
                    description=table.description,
                    synthetic=table.synthetic,
                    pad_small=False,
                    source=source,
                    repeat=repeat,
                    autoencoder_rows=train,
                    table=table,
                )  # fmt: skip
            )
        return out

    def methods(self, config):
        return methods.run_methods(config)[0]

    def hparams(self, config, name):
        if name.startswith("ae_rf_z"):
            return {**dict(config.loss.ae_rf), "latent_dim": int(name[len("ae_rf_z") :])}
        hp = dict(config.loss[name]) if name in config.loss else {}
        if methods.METHODS[name].representation == methods.AUTOENCODER:
            hp.setdefault("latent_dim", int(config.model.latent_dim))
        return hp

    def write_report(self, workdir, config, records, run_info):
        return report.write_report(workdir, config, records, run_info)

    def collect(self, name, config, records, run_info):
        return report.collect_section(name, config, records, run_info)

    def result_line(self, config, records, run_info):
        return report.result_line(config, records, run_info)


WBC = AECFEProtocol()
