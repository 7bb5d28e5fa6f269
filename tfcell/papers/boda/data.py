"""The BoDA white-cell study's data: every image of a run, on one scale.

    cpu     ../shared/data: PBC (pbc_128), BCCD and JTSC, the 5 classes they share
            (`tfcell.data.wbc.read_wbc_domains`), each with its natural imbalance
            and missing classes (BCCD: 3 basophils, JTSC: 1).
    paper   Matek-19, Acevedo-20 and INT-20 under `--config.data.root` in their
            published layouts (`config.data.matek / acevedo / int20`), the 13
            harmonised classes (`tfcell.data.wbc`).
    smoke   synthetic white cells from three hospitals (`synthetic.white_cells`).

Every image is brought to one field of view (`config.data.field_um`,
`tfcell.data.physical_scale.to_field_of_view`); a domain without a published
pixel size gets one estimated from its lymphocyte nuclei
(`config.data.scale_reference`). `config.data.extra_test_domains` adds
folder-per-class sets (a user's own hospital, read by
`tfcell.data.wbc.read_class_folders` into the same label space) that every
model is tested on and nothing trains or selects on.
"""

import os
import pathlib

import numpy as np
import pandas as pd

from tfcell.data import paths, physical_scale, synthetic, wbc
from tfcell.experiments import settings

__all__ = ["check_contract", "extra_domains", "shared_root", "wbc_records"]


def shared_root():
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
        shared = shared_root()
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


def check_contract(records, config):
    """The data's class order is the one config.json promises for the networks
    (`config.input_contract.class_names`)."""
    promised = tuple(config.input_contract.class_names)
    found = tuple(records.attrs["class_names"])
    if found != promised:
        raise ValueError(
            f"The data's classes {found} differ from config.input_contract.class_names "
            f"{promised}; set config.data.label_space to match the data."
        )
