"""The BoDA paper package: splits that never leak a held-out domain, the extra
test domains, the physical scale, every method's trainer, and the config."""

import importlib.util
import pathlib

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from tfcell.data import physical_scale, synthetic
from tfcell.evaluation import metrics
from tfcell.experiments import methods as methods_lib
from tfcell.papers import boda
from tfcell.papers.boda import methods, settings

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(variant="smoke"):
    spec = importlib.util.spec_from_file_location("_boda_cfg", ROOT / "configs" / "boda_wbc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def _domains(setting, part):
    return set(setting.records["domain"].astype(str).to_numpy()[setting.parts[part]])


def _check_protocols(all_settings, domains, unseen):
    by_name = {s.name: s for s in all_settings}
    for held in domains:
        s = by_name[f"lodo_{held}"]
        assert held not in _domains(s, "train") | _domains(s, "val")
        assert _domains(s, "train") == _domains(s, "val") == set(domains) - {held}
        everything = np.flatnonzero(s.records["domain"].astype(str).to_numpy() == held)
        np.testing.assert_array_equal(np.sort(s.parts["test"]), everything)
        assert not set(s.parts["train"]) & set(s.parts["val"])
    folds = [s for s in all_settings if s.name.startswith("cv_fold")]
    assert folds
    held_out = np.concatenate([s.parts["test:sources"] for s in folds])
    sources = np.flatnonzero(~np.isin(folds[0].records["domain"].astype(str), [unseen]))
    np.testing.assert_array_equal(np.sort(held_out), sources)  # Every source image once.
    for s in folds:
        assert unseen not in _domains(s, "train") | _domains(s, "val")
        assert _domains(s, f"test:{unseen}") == {unseen}
        used = set(s.parts["train"]) | set(s.parts["val"])
        assert not used & set(s.parts["test:sources"])


def test_synthetic_splits_never_leak_a_held_out_domain():
    config = _config("smoke")
    _check_protocols(
        settings.wbc_settings(config, 0), config.data.domains, config.data.unseen_domain
    )


@pytest.mark.slow
def test_real_splits_never_leak_a_held_out_domain(shared_data):
    config = _config("cpu")
    config.data.image_size = 16  # Only the splits matter here.
    all_settings = settings.wbc_settings(config, 0)
    _check_protocols(all_settings, config.data.domains, config.data.unseen_domain)
    records = all_settings[0].records
    counts = records.groupby("domain").size().to_dict()
    assert counts["pbc"] == 1500 and counts["bccd"] == 351 and counts["jtsc"] > 290
    # Each domain keeps its natural imbalance: BCCD has 3 basophils, JTSC 1.
    bccd = records[records["domain"] == "bccd"]
    assert (bccd["class_name"] == "basophil").sum() == 3
    # Every domain on the 25 um field: PBC's published pixel size, BCCD's and JTSC's
    # estimated from lymphocyte nuclei (BCCD's crops are cell-tight: finer pixels).
    assert set(records["field_um"]) == {25.0}
    estimates = records.attrs["scale_estimates"]
    assert set(estimates) == {"bccd", "jtsc"}
    assert 0.03 < estimates["bccd"]["um_per_px"] < estimates["jtsc"]["um_per_px"] < 0.25


def _write_folder(root, classes, n=3, size=20):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_extra_test_domains_are_tested_by_every_setting_and_never_trained_on(tmp_path):
    _write_folder(tmp_path / "mylab", ["Neutrophil", "lymphocyte", "platelet"])
    config = _config("smoke")
    # Synthetic white cells use the 5-class names, so the extra domain maps onto them.
    config.data.extra_test_domains = (f"lab={tmp_path / 'mylab'}",)
    all_settings = settings.wbc_settings(config, 0)
    for s in all_settings:
        assert "test:extra_lab" in s.parts
        assert _domains(s, "test:extra_lab") == {"extra_lab"}
        assert "extra_lab" not in _domains(s, "train") | _domains(s, "val")
        labels = s.labels("test:extra_lab")
        names = [s.class_names[i] for i in labels]
        assert sorted(set(names)) == ["lymphocyte", "neutrophil"]  # platelet: not a class.
    skipped = all_settings[0].records.attrs["skipped"]
    assert any("platelet" in str(p) for items in skipped.values() for p in items)


def test_an_extra_domain_with_no_known_class_fails_clearly(tmp_path):
    _write_folder(tmp_path / "other", ["platelet"])
    config = _config("smoke")
    config.data.extra_test_domains = (str(tmp_path / "other"),)
    with pytest.raises(ValueError, match="none of its folders"):
        settings.wbc_settings(config, 0)
    config.data.extra_test_domains = (str(tmp_path / "missing"),)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        settings.wbc_settings(config, 0)


def _marker_image(path, size, square):
    """A white image with a centred black square of `square` px."""
    image = np.full((size, size, 3), 255, np.uint8)
    lo = (size - square) // 2
    image[lo : lo + square, lo : lo + square] = 0
    Image.fromarray(image).save(path)


def test_field_of_view_gives_every_known_domain_one_pixel_size(tmp_path):
    # A 10 um cell: 100 px at 0.1 um/px in a 300 px image, 40 px at 0.25 um/px in 100 px.
    _marker_image(tmp_path / "a.png", 300, 100)
    _marker_image(tmp_path / "b.png", 100, 40)
    _marker_image(tmp_path / "c.png", 60, 30)  # Unknown scale: resized whole.
    table = pd.DataFrame(
        {
            "path": [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")],
            "label": [0, 0, 0],
            "um_per_px": [0.1, 0.25, np.nan],
        }
    )
    out = physical_scale.to_field_of_view(table, 40, field_um=20.0)
    dark = [int((image[20, :, 0] < 128).sum()) for image in out["image"]]
    # 10 um of a 20 um field at 40 px: 20 px in both known domains.
    assert abs(dark[0] - 20) <= 1 and abs(dark[1] - 20) <= 1
    assert abs(dark[2] - 20) <= 1  # Unknown: half of the whole image, by construction.
    assert out.attrs["scale"]["known"] == 2 and out.attrs["scale"]["unknown"] == 1
    assert (out["path"] == "").all() and out["source_path"].iloc[0].endswith("a.png")
    # A field larger than an image sits on its border colour (counted), never black.
    _marker_image(tmp_path / "d.png", 100, 40)
    grey = np.asarray(Image.open(tmp_path / "d.png")).copy()
    grey[grey == 255] = 200
    Image.fromarray(grey).save(tmp_path / "d.png")
    table.loc[1, "path"] = str(tmp_path / "d.png")
    wide = physical_scale.to_field_of_view(table.iloc[[1]], 40, field_um=40.0)
    assert wide.attrs["scale"]["padded"] == 1 and wide["image"].iloc[0].min() == 0
    assert wide["image"].iloc[0][0, 0].tolist() == [200, 200, 200]
    with pytest.raises(ValueError, match="um_per_px"):
        physical_scale.to_field_of_view(table.drop(columns="um_per_px"), 40, 20.0)


def test_domain_class_weights_follow_mdlt_cbloss():
    counts = np.array([[100, 10, 0], [5, 5, 5]])
    table = methods.domain_class_weights(counts, beta=0.9999)
    assert table[0, 2] == 0.0  # Absent from domain 0: never weighted.
    np.testing.assert_allclose(table.sum(axis=1), [3.0, 3.0])
    np.testing.assert_allclose(table[1], [1.0, 1.0, 1.0])
    assert table[0, 1] > table[0, 0]  # The rare class weighs more.
    effective = 1 - 0.9999 ** np.array([100.0, 10.0])
    expected = (1 - 0.9999) / effective
    np.testing.assert_allclose(table[0, :2], expected / expected.sum() * 3)


def test_every_method_builds_and_trains_one_step():
    config = _config("smoke")
    frame = synthetic.white_cells(48, image_size=16, domains=2, seed=0)
    domain_ids = (frame["domain"] == "hospital_1").to_numpy().astype("int32")
    labels = frame["label"].to_numpy().astype("int32")
    counts = np.zeros((2, 5), "int64")
    np.add.at(counts, (domain_ids, labels), 1)
    info = methods_lib.DataInfo(
        num_classes=5, class_counts=tuple(np.bincount(labels, minlength=5)),
        image_shape=(16, 16, 3), num_domains=2,
        domain_class_counts=tuple(map(tuple, counts.tolist())),
    )  # fmt: skip
    batch = {
        "image": np.stack(frame["image"]).astype("float32"),
        "label": labels,
        "domain": domain_ids,
        "subject": np.zeros(48, "int32"),
    }
    protocol = boda.WBC
    for name, method in protocol.methods(config).items():
        hp = protocol.hparams(config, name)
        hp["start_step"] = 0
        built = method.build(info, hp, config)
        built.model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = built.model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][-1]), name
        assert built.model.predict(batch["image"], verbose=0).shape == (48, 5)
        if name == "boda_plus":
            weights = np.asarray(built.model.class_weights)
            assert weights.shape == (2, 5) and weights.max() > 1.0


def test_per_class_metrics_score_only_present_classes():
    y_true = np.array([0, 0, 1, 1, 1, 1])
    y_pred = np.array([0, 1, 1, 1, 1, 0])
    out = metrics.per_class_metrics(y_true, y_pred, num_classes=3)
    assert out["f1_micro"] == pytest.approx(4 / 6)
    # Class 0: P 1/2, R 1/2 -> F1 0.5; class 1: P 3/4, R 3/4 -> 0.75; class 2 absent.
    assert out["f1_macro_present"] == pytest.approx((0.5 + 0.75) / 2)
    assert out["recall_per_class"] == [0.5, 0.75, None]
    assert out["support_per_class"] == [2, 4, 0]
    full = metrics.classification_metrics(y_true, y_pred, 3)
    assert full["f1"] == pytest.approx((0.5 + 0.75) / 3)  # Absent class counted as 0.


@pytest.mark.parametrize("variant", ["paper", "cpu", "pbc", "smoke"])
def test_config_variants_cite_the_papers_values(variant):
    config = _config(variant)
    assert config.loss.boda.nu == 0.5 and config.loss.boda.boda_weight == 0.1
    assert config.loss.boda.momentum == 0.2 and config.loss.boda.macro_weight == 1.0
    if variant == "paper":
        assert config.loss.boda.start_step == 500 and config.loss.boda.feat_update_freq == 120
        assert config.model.backbone == "resnet50" and config.training.per_domain == 24
        assert config.data.domains == ("matek", "acevedo", "int20")
        assert config.data.num_folds == 5 and config.data.unseen_domain == "int20"
    if variant == "pbc":
        assert config.protocol == "tfcell.papers.boda:PBC" and config.name == "boda_pbc"


def _image(path, seed, size=24):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_paper_reads_the_three_published_layouts(tmp_path):
    """`paper`: Matek-19, Acevedo-20 and INT-20 under one root in their published
    layouts, the 13 harmonised classes, INT-20 unseen, on one 25 um field."""
    seed = 0
    for abbr in ("NGS", "LYT", "MON", "EOS", "BAS"):
        for i in range(6):
            seed += 1
            _image(tmp_path / "AML-Cytomorphology_LMU" / abbr / f"{abbr}_{i}.tiff", seed, 40)
    for folder, prefix in (("neutrophil", "SNE"), ("lymphocyte", "LY"), ("monocyte", "MO"),
                           ("eosinophil", "EO"), ("basophil", "BA")):  # fmt: skip
        for _ in range(6):
            seed += 1
            _image(tmp_path / "PBC_dataset_normal_DIB" / folder / f"{prefix}_{seed}.jpg", seed, 36)
    for folder in ("15-SEG", "08-LYMPH-neo", "01-NORMO"):
        for i in range(4):
            seed += 1
            _image(tmp_path / "INT-20" / folder / f"{i}.png", seed, 29)
    config = _config("paper")
    config.data.root = str(tmp_path)
    config.data.image_size = 16
    config.data.num_folds = 2
    all_settings = settings.wbc_settings(config, 0)
    names = [s.name for s in all_settings]
    assert names == ["cv_fold0", "cv_fold1", "lodo_matek", "lodo_acevedo", "lodo_int20"]
    records = all_settings[0].records
    assert len(all_settings[0].class_names) == 13
    assert records.groupby("domain").size().to_dict() == {"acevedo": 30, "int20": 12, "matek": 30}
    assert set(records["field_um"]) == {25.0}  # Every published pixel size is known.
    _check_protocols(all_settings, config.data.domains, "int20")
    int20 = records[records["domain"] == "int20"]
    assert set(int20["class_name"]) == {
        "neutrophil_segmented", "lymphocyte_atypical", "erythroblast",
    }  # fmt: skip
    config.data.acevedo = "missing"
    with pytest.raises(FileNotFoundError, match="config.data.acevedo"):
        settings.wbc_settings(config, 0)


def test_config_json_carries_the_input_contract_of_the_data():
    from tfcell.data import wbc

    for variant, names in (
        ("cpu", wbc.WBC5_CLASSES),
        ("paper", wbc.HARMONISED_CLASSES),
        ("pbc", wbc.ACEVEDO_CLASSES),
        ("smoke", synthetic.WHITE_CELL_CLASSES),
    ):
        contract = _config(variant).input_contract
        assert tuple(contract.class_names) == tuple(names), variant
        assert tuple(contract.value_range) == (0.0, 255.0)
    config = _config("smoke")
    config.input_contract.class_names = ("a", "b", "c", "d", "e")
    with pytest.raises(ValueError, match="input_contract"):
        settings.wbc_settings(config, 0)


def _cell_image(path, size, radius, background=(230, 220, 200), nucleus=(90, 40, 120)):
    yy, xx = np.mgrid[:size, :size]
    image = np.empty((size, size, 3), np.uint8)
    image[...] = background
    image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2] = nucleus
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def test_unknown_pixel_sizes_are_estimated_from_lymphocyte_nuclei(tmp_path):
    rows = []
    for i in range(5):  # Reference: 20 px nuclei at 0.25 um/px (5 um).
        _cell_image(tmp_path / "ref" / f"{i}.png", 64, 10 + (i - 2) * 0.5)
        rows.append((tmp_path / "ref" / f"{i}.png", "ref", "lymphocyte", 0.25))
    for i in range(5):  # Unknown: 50 px nuclei -> 5 um at 0.1 um/px.
        _cell_image(tmp_path / "new" / f"{i}.png", 120, 25, nucleus=(120, 30, 30))
        rows.append((tmp_path / "new" / f"{i}.png", "new", "lymphocyte", np.nan))
    _cell_image(tmp_path / "none" / "0.png", 64, 10)
    rows.append((tmp_path / "none" / "0.png", "none", "monocyte", np.nan))
    table = pd.DataFrame(rows, columns=["path", "domain", "class_name", "um_per_px"])
    table["path"] = table["path"].astype(str)
    assert physical_scale.nucleus_diameter_px(np.asarray(Image.open(rows[2][0]))) == (
        pytest.approx(20.0, abs=1.0)
    )
    found = physical_scale.estimate_um_per_px(table, "ref")
    assert found["new"]["um_per_px"] == pytest.approx(0.1, rel=0.05)
    assert np.isnan(found["none"]["um_per_px"]) and found["none"]["images"] == 0
    with pytest.raises(ValueError, match="reference domain"):
        physical_scale.estimate_um_per_px(table, "new")
