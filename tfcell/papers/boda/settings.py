"""The BoDA white-cell study's splits, over the images of `data.wbc_records`.

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

import numpy as np
from sklearn import model_selection

from tfcell.experiments import settings
from tfcell.papers.boda import data

__all__ = ["cv_settings", "lodo_settings", "wbc_settings"]


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


def wbc_settings(config, repeat, records_cache=None):
    """The settings of one repeat: LODO every repeat, the k folds at repeat 0."""
    key = "records"
    if records_cache is not None and key in records_cache:
        records, synthetic_data, description = records_cache[key]
    else:
        records, synthetic_data, description = data.wbc_records(config)
        if records_cache is not None:
            records_cache[key] = (records, synthetic_data, description)
    data.check_contract(records, config)
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
