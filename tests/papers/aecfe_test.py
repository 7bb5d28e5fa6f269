"""The AE-CFE paper package: per-domain 80/20 splits that never put one image on
both sides, every domain a test part, the random-forest jobs refusing a split
that would, each method built and stepped, the report's tables with the
thesis's numbers beside measured ones, and the config's cited values."""

import importlib.util
import pathlib
import types

import keras
import numpy as np
import pandas as pd
import pytest

from tfcell import models
from tfcell.data import wbc
from tfcell.papers import aecfe
from tfcell.papers.aecfe import cells, data, methods, report, task

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(variant="smoke"):
    spec = importlib.util.spec_from_file_location("_cfg", ROOT / "configs" / "aecfe_wbc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.fixture(scope="module")
def smoke_settings():
    config = _config()
    return config, aecfe.WBC.settings(config, 0), aecfe.WBC.settings(config, 1)


def test_settings_split_every_domain_80_20_and_test_on_every_domain(smoke_settings):
    config, settings, _ = smoke_settings
    domains = list(config.data.domains)
    assert [s.name for s in settings] == [f"from_{d}" for d in domains]
    records = settings[0].records
    names = records["domain"].astype(str).to_numpy()
    for s in settings:
        assert s.test_parts == [f"test:{d}" for d in domains]
        assert s.size("val") == 0  # No selection: the forest has none, the oracle none.
        assert set(names[s.parts["train"]]) == {s.source}
        np.testing.assert_array_equal(s.autoencoder_rows, settings[0].autoencoder_rows)
        for d in domains:  # The same test parts for every source of a run.
            np.testing.assert_array_equal(s.parts[f"test:{d}"], settings[0].parts[f"test:{d}"])
    for d in domains:
        own = np.flatnonzero(names == d)
        train = settings[domains.index(d)].parts["train"]
        test = settings[0].parts[f"test:{d}"]
        assert sorted(np.concatenate([train, test])) == list(own)  # 80 + 20 = all of it.
        assert abs(len(test) / len(own) - 0.2) < 0.05
        # Stratified: each class's share of the test part within one image of 20 %.
        labels = records["label"].to_numpy()
        for c in np.unique(labels[own]):
            count = (labels[own] == c).sum()
            assert abs((labels[test] == c).sum() - 0.2 * count) <= 0.5 + 1e-9


def test_no_image_is_in_a_forest_training_part_and_a_test_part(smoke_settings):
    _, settings, other = smoke_settings
    for s in settings + other:
        train = set(s.parts["train"])
        hashes = s.table.hashes
        for part in s.test_parts:
            rows = s.parts[part]
            assert not train & set(rows)
            assert not set(hashes[s.parts["train"]]) & set(hashes[rows])
            assert not set(s.autoencoder_rows) & set(rows)  # Autoencoders: training 80 % only.
    # Each run draws its own split (Sec. 3.4: 5 runs).
    assert not np.array_equal(settings[0].parts["train"], other[0].parts["train"])


def test_an_extra_domain_is_a_target_only(tmp_path):
    """`extra_test_domains`: a folder-per-class set becomes a further target: its
    20 % a test part of every forest, its 80 % unlabelled autoencoder cells,
    never a forest's training domain."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("neutrophil", "lymphocyte", "unknown_cell"):
        (tmp_path / name).mkdir()
        for i in range(10):
            pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    config = _config()
    with config.unlocked():
        config.data.extra_test_domains = (f"lab={tmp_path}",)
    settings = aecfe.WBC.settings(config, 0)
    assert [s.name for s in settings] == [f"from_hospital_{i}" for i in range(3)]
    parts = settings[0].parts
    assert settings[0].test_parts[-1] == "test:extra_lab" and len(parts["test:extra_lab"]) == 4
    domains = settings[0].records["domain"].astype(str).to_numpy()
    assert (domains[settings[0].autoencoder_rows] == "extra_lab").sum() == 16
    for s in settings:
        assert "extra_lab" not in set(domains[s.parts["train"]])


def test_split_keeps_copies_of_an_image_on_one_side():
    frame = pd.DataFrame({"domain": ["a"] * 20, "label": [0, 1] * 10})
    hashes = np.array([f"h{i % 10}" for i in range(20)])  # Every image twice.
    for seed in range(5):
        train, test = data.split_rows(frame, hashes, 0.2, seed)
        assert not set(hashes[train]) & set(hashes[test])
        assert len(test) == 4  # 2 of the 10 distinct images, with their copies.
    single = pd.DataFrame({"domain": ["a", "a", "a"], "label": [0, 0, 1]})
    train, test = data.split_rows(single, np.array(["x", "y", "z"]), 0.2, 0)
    assert 2 in train  # A class with one image stays in training.
    with pytest.raises(ValueError, match="test_fraction"):
        data.split_rows(single, np.array(["x", "y", "z"]), 1.0, 0)


def test_check_disjoint_names_shared_rows_and_shared_pixels():
    hashes = np.array(["a", "b", "c", "a"])
    data.check_disjoint([0, 1], {"test:x": [2]}, hashes, "ok")
    with pytest.raises(AssertionError, match="1 row"):
        data.check_disjoint([0, 1], {"test:x": [1, 2]}, hashes, "rows")
    with pytest.raises(AssertionError, match="1 image"):
        data.check_disjoint([0, 1], {"test:x": [3]}, hashes, "pixels")  # A copy of row 0.


def test_forest_job_refuses_to_train_and_test_on_the_same_images():
    setting = types.SimpleNamespace(source="a", test_parts=["test:a"], num_classes=2)
    job_data = types.SimpleNamespace(
        parts={"train": np.array([0, 1, 2]), "test:a": np.array([2, 3])},
        test_parts=["test:a"], hashes=np.array(["p", "q", "r", "s"]), setting=setting,
    )  # fmt: skip
    job = types.SimpleNamespace(data=job_data, key="from_a/r0/rcnn_rf", method=None)
    with pytest.raises(AssertionError, match="never train and test"):
        task.AECFETask().run_job(job)


def test_undetected_cells_are_left_out_and_counted(smoke_settings, monkeypatch):
    """on_miss="drop" (the thesis): a crop without a central cell is in no part
    of any table (training, test, autoencoder) and counted where it was."""
    config, settings, _ = smoke_settings
    setting = settings[0]
    n = len(setting.records)
    found = np.ones(n, bool)
    found[::3] = False
    rng = np.random.default_rng(0)
    fake = cells.Cells(
        found=found, usable=found.copy(), boxes=np.zeros((n, 4), "int64"),
        features=rng.normal(size=(n, 6)).astype("float32"),
        crops=np.zeros((n, 16, 16, 3), "uint8"),
        summary={"dice": {}, "detection": {}, "on_miss": "drop"},
    )  # fmt: skip
    monkeypatch.setattr(task.cells_lib, "run_cells", lambda *args: fake)
    job_data = task.AECFEData(setting, config, None)
    for part, rows in setting.parts.items():
        np.testing.assert_array_equal(job_data.parts[part], rows[found[rows]])
        assert job_data.missed[part] == (~found[rows]).sum()
    assert found[job_data.autoencoder_rows].all()
    assert len(job_data.autoencoder_rows) == found[setting.autoencoder_rows].sum()
    job = types.SimpleNamespace(
        data=job_data, key="from_hospital_0/r0/rcnn_rf", name="rcnn_rf", config=config,
        method=methods.METHODS["rcnn_rf"], hp={}, seed=0, verbose=0,
    )  # fmt: skip
    result = task.AECFETask().run_job(job)
    for record in result.records:
        rows = setting.parts[record["test_set"]]
        assert record["num_test"] == found[rows].sum()
        assert record["missed_test"] == (~found[rows]).sum() > 0
    assert record["num_train_cells"] == found[setting.parts["train"]].sum()
    assert found[result.outputs["train_rows"]].all()


def test_threshold_masks_mark_cell_and_nucleus_of_synthetic_cells(smoke_settings):
    _, settings, _ = smoke_settings
    images = settings[0].table.images[:12]
    masks = data.threshold_masks(images)
    assert masks.shape == images.shape[:3] and set(np.unique(masks)) <= {0, 1, 2}
    centre = masks[:, 12:20, 12:20]
    assert (centre > 0).mean() > 0.8  # The cell sits in the middle,
    assert (masks[:, 0, :] == 0).mean() > 0.9  # the border is glass,
    assert ((masks == 2).sum((1, 2)) > 0).all()  # and every cell has a nucleus.


def test_methods_of_a_run_and_their_hyperparameters():
    config = _config()
    found, skipped = methods.run_methods(config)
    assert list(found) == ["rcnn_rf", "ae_rf", "nd_ae_da", "aae_da", "ae_cfe", "oracle_cnn"]
    assert "no ImageNet weights offline" in skipped["resnet_rf"]
    with config.unlocked():
        config.model.resnet_weights = "/models/resnet50_notop.h5"
        config.bottleneck.sizes = (4, 8, 16)  # 8 is the run's latent size: ae_rf itself.
    found, skipped = methods.run_methods(config)
    assert list(found)[0] == "resnet_rf" and not skipped
    assert [m for m in found if m.startswith("ae_rf_z")] == ["ae_rf_z4", "ae_rf_z16"]
    assert aecfe.WBC.hparams(config, "ae_rf_z16") == {"beta": 0.0, "alignment": "domain",
                                                       "latent_dim": 16}  # fmt: skip
    assert aecfe.WBC.hparams(config, "ae_cfe") == {"beta": 5.0, "alignment": "domain",
                                                    "latent_dim": 8}  # fmt: skip
    assert aecfe.WBC.hparams(config, "rcnn_rf") == {}
    with config.unlocked():
        config.methods = ("rcnn_rf", "mask_rcnn")
    with pytest.raises(ValueError, match="mask_rcnn"):
        methods.run_methods(config)


@pytest.mark.parametrize("name", ["ae_rf", "nd_ae_da", "aae_da", "ae_cfe"])
def test_each_autoencoder_builds_and_takes_a_step(name):
    config = _config()
    hp = aecfe.WBC.hparams(config, name)
    trainer = methods.build_autoencoder(hp, config, (12,), num_domains=3, source_index=1)
    assert trainer.beta == hp["beta"] and trainer.alignment == hp["alignment"]
    assert trainer.source_domain == 1
    rng = np.random.default_rng(0)
    batch = {
        "features": rng.uniform(-1, 1, (12, 12)).astype("float32"),
        "image": rng.uniform(0, 1, (12, 16, 16, 3)).astype("float32"),
        "domain": np.repeat([0, 1, 2], 4).astype("int32"),
    }
    logs = trainer.train_step(batch)  # One eager step (no graph tracing).
    assert np.isfinite(float(logs["loss"])) and {"mse", "ssim_term", "domain_term"} <= set(logs)
    codes = models.aecfe_encode(trainer, batch["features"])
    assert codes.shape == (12, hp["latent_dim"])


def test_oracle_builds_and_takes_a_step():
    config = _config()
    model = methods.build_oracle(config, (32, 32, 3), 5)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    model.compile(optimizer="adam", loss=model.loss, metrics=["accuracy"], run_eagerly=True)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    logs = model.train_on_batch(x, np.array([0, 1, 2, 3]), return_dict=True)
    assert np.isfinite(logs["loss"]) and model.output_shape == (None, 5)


def _records():
    """Two runs over the thesis's three sets, fabricated."""
    out = []
    domains = ("matek", "int20", "acevedo")
    for repeat, shift in enumerate((0.0, 0.02)):
        for source in domains:
            for target in domains:
                same = source == target
                for method, inside, across in (("rcnn_rf", 0.6, 0.1), ("ae_rf", 0.8, 0.3),
                                               ("ae_cfe", 0.8, 0.45), ("oracle_cnn", 0.9, 0.1),
                                               ("ae_rf_z10", 0.7, 0.3)):  # fmt: skip
                    out.append({
                        "method": method, "title": method.upper(), "repeat": repeat,
                        "kind": "oracle" if method == "oracle_cnn" else "forest",
                        "source": source, "target": target, "test_set": f"test:{target}",
                        "accuracy": (inside if same else across) + shift,
                        "balanced_accuracy": (inside if same else across) / 2 + shift,
                        "majority_accuracy": 0.3, "synthetic": False,
                        "class_names": list(wbc.HARMONISED_CLASSES),
                        "hparams": {"latent_dim": 10 if method == "ae_rf_z10" else 50},
                        "detector": {"dice": {"cell_dice": 0.9, "central_dice": 0.85,
                                              "nucleus_dice": 0.7, "detected": 0.95,
                                              "images": 60},
                                     "detection": {"all": {"images": 100, "detected": 85,
                                                           "missed": 15, "fraction": 0.85}},
                                     "on_miss": "drop", "masks": "60 JTSC crops"},
                        "description": "three sets",
                    })  # fmt: skip
    return out


def test_report_tables_put_the_thesis_beside_measured_values():
    config = _config("paper")
    records = _records()
    table = report.cross_domain_table(records, config)
    lines = table.splitlines()
    assert lines[0] == ("| Trained on | Tested on | ResNet-RF | RCNN_RF | AE_RF | AE_CFE | "
                        "majority class |")  # fmt: skip
    # Matek-19 -> Matek-19: measured (80 %, 82 %) beside Table 3.2's 60.5 / 86.0 / 83.7.
    assert ("| matek | matek | not run / 62.5 +- 2.8 | 61.0 +- 1.4 / 60.5 +- 0.8 | "
            "81.0 +- 1.4 / 86 +- 0.04 | 81.0 +- 1.4 / 83.7 +- 0.5 | 30.0 |") in table  # fmt: skip
    assert "| int20 | acevedo |" in table and "46.0 +- 1.4 / 31.8 +- 0.4" in table
    assert "AE_RF_Z10" not in table  # The bottleneck study is Table 3.1's.
    summary = report.summary_table(records, config)
    # AE-CFE: in-domain 81 +- 1.4 measured, thesis mean of 83.7, 65.6, 65.2 = 71.5.
    assert "| AE_CFE | 81.0 +- 1.4 | 46.0 +- 1.4 | 71.5 | 40.2 |" in summary
    assert "| thesis: ResNext (supervised) | - | - | 87.2 | 20.5 |" in summary
    balanced = report.balanced_summary_table(records, config)
    # AE-CFE cross-domain balanced: (0.45 / 2 + shift) over runs = 22.5, 24.5.
    assert "| AE_CFE | 41.0 +- 1.4 | 23.5 +- 1.4 |" in balanced
    assert "| ORACLE_CNN (supervised) | 46.0 +- 1.4 | 6.0 +- 1.4 |" in balanced
    assert (
        "| source's majority class (accuracy, for reference) | 30.0 +- 0.0 | 30.0 +- 0.0 |"
        in balanced
    )
    oracle = report.oracle_table(records, config)
    assert "| int20 | matek | 11.0 +- 1.4 | 46.0 +- 1.4 | 49.6 +- 6.3 | - | 73.2 +- 0.1 |" in oracle
    bottleneck = report.bottleneck_table(records, config)
    assert "| 10 | 71.0 +- 1.4 | 31.0 +- 1.4 | 79 | 78 |" in bottleneck
    assert "| 50 | 81.0 +- 1.4 | 31.0 +- 1.4 | 85 | 84 |" in bottleneck
    detector = report.detector_table(records, config)
    assert (
        "cell Dice 0.900" in detector
        and "| all | 100 | 85 | 15 | 85.0 | 85 (three sets) |" in detector
    )
    section = report.collect_section("aecfe_wbc_paper", config.to_dict(), records,
                                     {"elapsed_min": 3.0, "hardware": "CPU"})  # fmt: skip
    assert "Table 3.2 layout" in section and "Table 3.1 layout" in section
    line = report.result_line(config.to_dict(), records, {"elapsed_min": 3.0, "hardware": "CPU"})
    assert line.startswith("Cross-domain mean accuracy (Table 3.2): thesis AE-CFE 40.2 %.")
    assert "AE-CFE 46.0 +- 1.4 %" in line and "CNN oracle 11.0 +- 1.4 %" in line


@pytest.mark.parametrize("variant", ["paper", "cpu", "smoke"])
def test_config_variants_cite_the_thesis(variant):
    config = _config(variant)
    assert config.forest.max_depth == 16  # The authors' random forest.
    assert config.loss.ae_cfe.beta == 5.0 and config.loss.ae_cfe.alignment == "domain"
    assert config.loss.ae_rf.beta == 0.0  # AE-RF: no domain adaptation.
    assert config.loss.nd_ae_da.alignment == "normal"
    assert config.loss.aae_da.alignment == "adversarial"
    assert config.optimizer.learning_rate == 1e-3 and config.detector.learning_rate == 1e-3
    assert config.data.test_fraction == 0.2 and config.detector.output_size == 14
    assert config.input_contract.class_names == (
        wbc.WBC5_CLASSES if config.data.label_space == "five" else wbc.HARMONISED_CLASSES
    )
    assert config.protocol == "tfcell.papers.aecfe:WBC" and config.name == "aecfe_wbc"
    if variant == "paper":
        assert config.model.latent_dim == 50 and config.num_repeats == 5
        assert config.autoencoder.epochs == 150 and config.autoencoder.batch_size == 1500
        assert config.autoencoder.source_domain == "matek" and config.detector.epochs == 26
        assert config.data.domains == ("matek", "int20", "acevedo")
        assert config.detector.pooling == "" and config.model.reconstruction_size == 128
        assert tuple(config.bottleneck.sizes) == tuple(s for s, _ in config.paper.table_3_1)
    if variant == "cpu":
        assert config.model.latent_dim == 50 and config.data.domains == ("pbc", "bccd", "jtsc")
        assert config.detector.masks == "jtsc" and config.detector.epochs == 26
    paper = config.paper
    assert len(paper.table_3_2) == 9 and all(len(row[2]) == 6 for row in paper.table_3_2)
    assert paper.table_3_2[0][2][5] == (83.7, 0.5)  # Matek-19 -> Matek-19, AE-CFE.
    assert paper.table_3_3[4][2][0] == (88.7, 1.5)  # INT-20 -> INT-20, ResNext.


@pytest.mark.real_data
def test_cpu_table_splits_the_three_real_domains(shared_data):
    config = _config("cpu")
    settings = aecfe.WBC.settings(config, 0)
    assert [s.name for s in settings] == ["from_pbc", "from_bccd", "from_jtsc"]
    counts = {p: settings[0].size(p) for p in settings[0].test_parts}
    assert counts == pytest.approx({"test:pbc": 300, "test:bccd": 70, "test:jtsc": 60}, abs=3)
    assert settings[0].size("train") + counts["test:pbc"] == 1500
    table = settings[0].table
    images, masks, labels, where = data.detector_pairs(config, table.records, table.images)
    assert images.shape == (299, 64, 64, 3) and masks.shape == (299, 64, 64)
    assert "estimated" in where and len(labels) == 299
