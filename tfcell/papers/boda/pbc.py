"""The standard single-domain benchmark beside the BoDA study: PBC
(Acevedo-20) 8 classes, in-domain, ERM, reported beside MedMNIST v2
BloodMNIST (the same images at 28 px; Yang et al., Sci. Data 10:41, 2023)."""

import pathlib

from tfcell.data import synthetic, wbc
from tfcell.evaluation import report, statistics
from tfcell.experiments import settings
from tfcell.papers.boda.data import check_contract, shared_root
from tfcell.papers.boda.report import _cell, _get, _singles, _write

__all__ = ["pbc_result_line", "pbc_section", "pbc_settings", "write_pbc_report"]


def pbc_settings(config, repeat):
    """PBC 8 classes in one domain: stratified train / val / test (BloodMNIST's 7:1:2)."""
    if config.data.root == "synthetic":
        table = synthetic.white_cells(
            config.synthetic.num_images, image_size=config.data.image_size, domains=1,
            seed=config.seed,
        )  # fmt: skip
        where, synthetic_data = "synthetic white cells", True
    else:
        folder = pathlib.Path(config.data.root) if config.data.root else shared_root() / "pbc_128"
        table = wbc.read_acevedo(folder, label_space="native", domain="pbc")
        where, synthetic_data = f"PBC (Acevedo-20) 8 classes from {folder}", False
    seed = config.seed + repeat
    if not table.attrs.get("synthetic"):
        check_contract(table, config)
    table = settings.subsample(table, config.data.max_per_domain, seed)
    return [
        settings.holdout(
            "pbc_8class",
            table,
            config.data.test_fraction,
            config.data.val_fraction,
            seed,
            by="patch",
            description=f"{where}, {len(table)} images at {config.data.image_size} px",
            synthetic=synthetic_data,
            pad_small=False,
        )  # fmt: skip
    ]


def _pbc_table(records, config):
    rows = [r for r in _singles(records) if r.get("test_set") == "test"]
    anchors = _get(config, "paper", "bloodmnist", default={}) or {}
    header = ["Model", "test accuracy", "macro-F1", "epochs", "train time (min)"]
    body = [
        [
            f"ERM, {config['model']['backbone']} at {config['data']['image_size']} px (measured)",
            _cell([r["accuracy"] for r in rows]),
            _cell([r["f1"] for r in rows]),
            str(rows[0].get("epochs", "-")) if rows else "-",
            statistics.format_mean_std(
                [r.get("train_time_s", float("nan")) / 60 for r in rows], digits=1
            ),
        ]
    ]
    for name, value in dict(anchors).items():
        body.append([f"BloodMNIST (MedMNIST v2, 28 px): {name}", f"{value:.3f}", "-", "-", "-"])
    return report.markdown_table(header, body)


def write_pbc_report(workdir, config, records, run_info):
    rows = [r for r in _singles(records) if r.get("test_set") == "test"]
    lines = [
        f"# {config.title}",
        "",
        "Anchors: MedMNIST v2 (Yang et al., Sci. Data 10:41, 2023), BloodMNIST: the same "
        "PBC images at 28 px, its own 7:1:2 split.",
        "",
        f"Data: {records[0].get('description', '') if records else ''}; train "
        f"{rows[0]['num_train'] if rows else '-'}, validation {rows[0]['num_val'] if rows else '-'}, "
        f"test {rows[0]['num_test'] if rows else '-'} (stratified 7:1:2).",
        "",
        f"ERM with `{config.model.backbone}` {tuple(config.model.widths)} at "
        f"{config.data.image_size} px, Adam {config.optimizer.learning_rate}, batch "
        f"{config.training.batch_size}, {config.training.epochs} epochs, augmentation "
        f"`{config.training.augment}`; the epoch with the best validation macro-F1 is kept. "
        f"{run_info.get('hardware', '')}; whole run {run_info.get('elapsed_min', 0.0):.1f} min.",
        "",
        "## PBC 8 classes, in-domain, beside MedMNIST v2 BloodMNIST",
        "",
        _pbc_table(records, config),
        "",
    ]
    return _write(workdir, lines)


def pbc_section(name, config, records, run_info):
    minutes = run_info.get("elapsed_min", float("nan"))
    return (
        f"### `{name}`: {config['title']}\n\n{run_info.get('hardware', '')}, whole run "
        f"{minutes:.0f} min (decoding included).\n\n" + _pbc_table(records, config) + "\n"
    )


def pbc_result_line(config, records, run_info):
    rows = [r for r in _singles(records) if r.get("test_set") == "test"]
    if not rows:
        return ""
    return (
        f"Result (PBC 8 classes, in-domain): test accuracy {_cell([r['accuracy'] for r in rows])} "
        f"at {config['data']['image_size']} px; BloodMNIST anchors (28 px): ResNet-18 0.958, "
        f"AutoML Vision 0.966; {run_info.get('hardware', '')}, "
        f"{run_info.get('elapsed_min', float('nan')):.0f} min"
    )
