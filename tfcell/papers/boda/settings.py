"""The BoDA white-cell study's data and splits.

Data (`wbc_records`):
    cpu     ../shared/data: PBC (pbc_128), BCCD and JTSC, the 5 classes they share
            (`tfcell.data.wbc.read_wbc_domains`), each with its natural imbalance
            and missing classes (BCCD: 3 basophils, JTSC: 1).
    paper   Matek-19, Acevedo-20 and INT-20 under `--config.data.root` in their
            published layouts (`config.data.matek / acevedo / int20`), the 13
            harmonised classes (`tfcell.data.wbc`).
    smoke   synthetic white cells from three hospitals (`synthetic.white_cells`).
Every image is brought to one field of view where its pixel size is known
(`tfcell.data.physical_scale.to_field_of_view`, `config.data.field_um`).
`config.data.extra_test_domains` adds folder-per-class sets (a user's own
hospital, read by `tfcell.data.wbc.read_class_folders` into the same label
space) that every model is tested on and nothing trains or selects on.

Splits (`wbc_settings`), DomainBed's training-domain validation throughout:
    lodo_<d>        train on every domain but d, validate on a stratified
                    `val_fraction` of each source domain, test on all of d.
    cv_fold<k>      the poster's protocol: the source domains (all but
                    `config.data.unseen_domain`) split in `num_folds` folds
                    per domain, stratified by class; fold k is the in-domain
                    test part `test:sources`, a stratified `val_fraction` of
                    the other folds validates, and the unseen domain is
                    `test:<unseen>`. (The poster reports the validation folds
                    themselves; here selection and the reported in-domain
                    numbers use disjoint images.)
The unseen domain's images are never in a training or validation part
(asserted in `_check_disjoint`).
"""

import os
import pathlib

import numpy as np
import pandas as pd
from sklearn import model_selection

from tfcell.data import paths, physical_scale, synthetic, wbc
from tfcell.experiments import settings

__all__ = ["extra_domains", "pbc_settings", "wbc_records", "wbc_settings"]


def _shared_root():
    root = paths.shared_data_root()
    if root is None:
        raise FileNotFoundError(
            "No ../shared/data found for the BoDA cpu config: set TFCELL_SHARED_DATA to the "
            "folder holding pbc_128/ and wbc_domains/, pass --config.data.root=<Matek/Acevedo/"
            "INT-20 folder> with --config=configs/boda_wbc.py:paper, or "
            "--config.data.root=synthetic."
        )
    return root


def _paper_records(config):
    root = pathlib.Path(config.data.root)
    readers = {
        "matek": lambda p: wbc.read_matek(p, label_space="harmonised"),
        "acevedo": lambda p: wbc.read_acevedo(p, label_space="harmonised"),
        "int20": lambda p: wbc.read_int20(p),
    }
    frames = []
    for domain in config.data.domains:
        if domain not in readers:
            raise ValueError(
                f"config.data.domains: {domain!r} is not a published white-cell set; use "
                f"{sorted(readers)} with --config.data.root (or extra_test_domains for others)."
            )
        folder = root / config.data[domain]
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{domain}: no folder {folder} (config.data.{domain}={config.data[domain]!r} "
                f"under --config.data.root={root}); set config.data.{domain} to its location."
            )
        frame = readers[domain](folder)
        frame["domain"] = domain
        frames.append(frame)
    return _merge(frames, wbc.HARMONISED_CLASSES)


def _merge(frames, class_names):
    skipped = {}
    for frame in frames:
        for reason, items in frame.attrs.get("skipped", {}).items():
            skipped.setdefault(reason, []).extend(items)
    merged = pd.concat(frames, ignore_index=True)
    merged.attrs = {"class_names": list(class_names), "skipped": skipped}
    return merged


def _per_domain_subsample(records, limit, seed):
    if not limit:
        return records
    parts = [
        settings.subsample(part, limit, seed)
        for _, part in records.groupby("domain", sort=True)
    ]  # fmt: skip
    out = pd.concat(parts).sort_index()
    out.attrs = dict(records.attrs)
    return out.reset_index(drop=True)


def _class_names(config):
    if config.data.label_space == "harmonised":
        return wbc.HARMONISED_CLASSES
    if config.data.label_space == "native":
        return wbc.ACEVEDO_CLASSES
    return wbc.WBC5_CLASSES


def extra_domains(config):
    """The `extra_test_domains` as record tables in the run's label space.

    Each entry is "name=path" or "path"; the class folders are matched to the
    label space by name, case-insensitively (others dropped and counted by
    `read_class_folders`). Pixel size unknown (no field-of-view crop).
    """
    names = _class_names(config)
    lookup = {n.lower(): n for n in names}
    out = []
    for entry in config.data.extra_test_domains:
        name, _, path = entry.rpartition("=")
        path = os.path.expanduser(path)
        name = name or os.path.basename(os.path.normpath(path))
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"config.data.extra_test_domains: {entry!r} is not a folder (expected "
                "'name=path' to a folder with one sub-folder per class)."
            )
        folders = sorted(e.name for e in os.scandir(path) if e.is_dir())
        class_map = {f: lookup.get(f.lower()) for f in folders}
        if not any(class_map.values()):
            raise ValueError(
                f"extra test domain {name!r} ({path}): none of its folders {folders} is a "
                f"class of this run ({list(names)}); rename them to the class names."
            )
        frame = wbc.read_class_folders(path, class_map, names, domain=f"extra_{name}")
        out.append(frame)
    return out


def wbc_records(config):
    """`(records, synthetic, description)`: every image of the run, on one scale."""
    seed = config.seed
    root = config.data.root
    extras = extra_domains(config)
    if root == "synthetic":
        s = config.synthetic
        n = len(config.data.domains)
        table = synthetic.white_cells(
            s.num_images, image_size=config.data.image_size, domains=n,
            imbalance=s.imbalance, seed=seed,
        )  # fmt: skip
        description = f"synthetic white cells ({len(table)}, {n} hospitals)"
        if extras:  # Decoded whole (no pixel size), then beside the in-memory cells.
            decoded = physical_scale.to_field_of_view(
                _merge(extras, table.attrs["class_names"]), config.data.image_size, None
            )
            table = _merge([table, decoded], table.attrs["class_names"])
        return table, True, description
    if root:
        records = _paper_records(config)
        where = f"{', '.join(config.data.domains)} from {root}"
    else:
        shared = _shared_root()
        records = wbc.read_wbc_domains(shared, domains=tuple(config.data.domains))
        where = f"{', '.join(config.data.domains)} from {shared}"
    records = _per_domain_subsample(records, config.data.max_per_domain, seed)
    if extras:
        records = _merge([records, *extras], records.attrs["class_names"])
    attrs = dict(records.attrs)
    records = records.reset_index(drop=True)
    records.attrs = attrs
    estimated = _estimate_scales(records, config)
    scaled = physical_scale.to_field_of_view(records, config.data.image_size, config.data.field_um)
    scale = scaled.attrs["scale"]
    counts = records.groupby("domain").size().to_dict()
    description = (
        f"{where} ({', '.join(f'{d} {n}' for d, n in counts.items())}); field of view "
        f"{scale['field_um']} um for {scale['known']} images of known pixel size, "
        f"{scale['unknown']} resized whole (pixel size unknown)"
    )
    if estimated:
        description += "; pixel size estimated from lymphocyte nuclei: " + ", ".join(
            f"{d} {e['um_per_px']:.3f} um/px ({e['images']} cells)" for d, e in estimated.items()
        )
    scaled.attrs["scale_estimates"] = estimated
    return scaled, False, description


def _estimate_scales(records, config):
    """Fills the unknown pixel sizes with `physical_scale.estimate_um_per_px`
    (config.data.scale_reference / scale_cell_class; "" = leave them unknown).
    Returns the estimates of the domains it filled."""
    reference = config.data.get("scale_reference") or ""
    if not reference or config.data.field_um is None:
        return {}
    if np.isfinite(records["um_per_px"].astype(float)).all():
        return {}  # Every pixel size is published.
    if reference not in set(records["domain"].astype(str)):
        raise ValueError(
            f"config.data.scale_reference={reference!r} is not a domain of this run "
            f"({sorted(set(records['domain'].astype(str)))})."
        )
    found = physical_scale.estimate_um_per_px(
        records, reference, cell_class=config.data.scale_cell_class, seed=config.seed
    )
    filled = {}
    for domain, estimate in found.items():
        if domain == reference or not np.isfinite(estimate["um_per_px"]):
            continue
        records.loc[records["domain"].astype(str) == domain, "um_per_px"] = estimate["um_per_px"]
        filled[domain] = estimate
    return filled


def _stratified_cut(table, fraction, seed):
    """Row labels of a stratified `fraction` of `table` and of the rest."""
    labels = table["label"].to_numpy()
    index = table.index.to_numpy()
    try:
        rest, held = model_selection.train_test_split(
            index, test_size=fraction, random_state=seed, stratify=labels
        )
    except ValueError:  # A class with a single image (JTSC: 1 basophil).
        rest, held = model_selection.train_test_split(index, test_size=fraction, random_state=seed)
    return np.sort(rest), np.sort(held)


def _per_domain_val(records, rows, fraction, seed):
    """Training and validation rows: a stratified cut of every domain in `rows`."""
    train, val = [], []
    for _, part in records.loc[rows].groupby("domain", sort=True):
        tr, va = _stratified_cut(part, fraction, seed)
        train.append(tr)
        val.append(va)
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _check_disjoint(setting, held_out):
    """No image of a held-out domain in a training or validation part."""
    domains = setting.records["domain"].astype(str).to_numpy()
    for part in ("train", "val"):
        leaked = sorted(set(domains[setting.parts[part]]) & set(held_out))
        if leaked:
            raise AssertionError(
                f"{setting.name}: {part} holds images of held-out domain(s) {leaked}."
            )


def _extra_parts(records):
    domains = records["domain"].astype(str)
    return {
        f"test:{d}": np.flatnonzero((domains == d).to_numpy())
        for d in sorted(set(domains))
        if d.startswith("extra_")
    }


def _setting(name, records, parts, description, synthetic_data, held_out):
    s = settings.Setting(
        name, records, parts, tuple(records.attrs["class_names"]),
        description=description, synthetic=synthetic_data, pad_small=False,
    )  # fmt: skip
    _check_disjoint(s, held_out)
    return s


def lodo_settings(records, config, seed, description, synthetic_data):
    """One setting per domain of `config.data.domains`, tested on it."""
    domains = records["domain"].astype(str).to_numpy()
    extras = _extra_parts(records)
    extra_names = [p.split(":", 1)[1] for p in extras]
    out = []
    for held in config.data.domains:
        sources = np.flatnonzero(~np.isin(domains, [held, *extra_names]))
        train, val = _per_domain_val(records, sources, config.data.val_fraction, seed)
        parts = {"train": train, "val": val, "test": np.flatnonzero(domains == held), **extras}
        out.append(
            _setting(
                f"lodo_{held}",
                records,
                parts,
                f"{description}; {held} held out",
                synthetic_data,
                [held, *extra_names],
            )  # fmt: skip
        )
    return out


def cv_settings(records, config, seed, description, synthetic_data):
    """The poster's k-fold protocol: folds of the source domains, one unseen domain."""
    unseen = config.data.unseen_domain
    if unseen not in config.data.domains:
        raise ValueError(
            f"config.data.unseen_domain={unseen!r} is not one of config.data.domains "
            f"{tuple(config.data.domains)}."
        )
    domains = records["domain"].astype(str).to_numpy()
    extras = _extra_parts(records)
    extra_names = [p.split(":", 1)[1] for p in extras]
    k = int(config.data.num_folds)
    folds = [[] for _ in range(k)]
    for domain in config.data.domains:
        if domain == unseen:
            continue
        rows = np.flatnonzero(domains == domain)
        labels = records["label"].to_numpy()[rows]
        # Stratified by class where every class has k images, else plain folds.
        counts = np.bincount(labels)
        if counts[counts > 0].min() >= k:
            splitter = model_selection.StratifiedKFold(k, shuffle=True, random_state=seed)
        else:
            splitter = model_selection.KFold(k, shuffle=True, random_state=seed)
        for fold, (_, test) in enumerate(splitter.split(rows, labels)):
            folds[fold].append(rows[test])
    out = []
    for fold in range(k):
        held = np.sort(np.concatenate(folds[fold]))
        rest = np.sort(
            np.concatenate([np.concatenate(f) for i, f in enumerate(folds) if i != fold])
        )
        train, val = _per_domain_val(records, records.index[rest], config.data.val_fraction, seed)
        parts = {
            "train": train,
            "val": val,
            "test:sources": held,
            f"test:{unseen}": np.flatnonzero(domains == unseen),
            **extras,
        }
        out.append(
            _setting(
                f"cv_fold{fold}",
                records,
                parts,
                f"{description}; fold {fold + 1}/{k} of the sources, {unseen} unseen",
                synthetic_data,
                [unseen, *extra_names],
            )  # fmt: skip
        )
    return out


def _check_contract(records, config):
    """The data's class order is the one config.json promises for the networks."""
    promised = tuple(config.input_contract.class_names)
    found = tuple(records.attrs["class_names"])
    if found != promised:
        raise ValueError(
            f"The data's classes {found} differ from config.input_contract.class_names "
            f"{promised}; set config.data.label_space to match the data."
        )


def wbc_settings(config, repeat, records_cache=None):
    """The settings of one repeat: LODO every repeat, the k folds at repeat 0."""
    key = "records"
    if records_cache is not None and key in records_cache:
        records, synthetic_data, description = records_cache[key]
    else:
        records, synthetic_data, description = wbc_records(config)
        if records_cache is not None:
            records_cache[key] = (records, synthetic_data, description)
    _check_contract(records, config)
    seed = config.seed + repeat
    out = []
    for protocol in config.data.protocols:
        if protocol == "lodo":
            out += lodo_settings(records, config, seed, description, synthetic_data)
        elif protocol == "cv":
            if repeat == 0:  # The folds are the repetitions.
                out += cv_settings(records, config, config.seed, description, synthetic_data)
        else:
            raise ValueError(f"config.data.protocols: 'lodo' or 'cv'; received {protocol!r}.")
    return out


def pbc_settings(config, repeat):
    """PBC 8 classes in one domain: stratified train / val / test (BloodMNIST's 7:1:2)."""
    if config.data.root == "synthetic":
        table = synthetic.white_cells(
            config.synthetic.num_images, image_size=config.data.image_size, domains=1,
            seed=config.seed,
        )  # fmt: skip
        where, synthetic_data = "synthetic white cells", True
    else:
        folder = pathlib.Path(config.data.root) if config.data.root else _shared_root() / "pbc_128"
        table = wbc.read_acevedo(folder, label_space="native", domain="pbc")
        where, synthetic_data = f"PBC (Acevedo-20) 8 classes from {folder}", False
    seed = config.seed + repeat
    if not table.attrs.get("synthetic"):
        _check_contract(table, config)
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
