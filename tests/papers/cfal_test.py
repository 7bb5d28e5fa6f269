"""Tests for tfcell.papers.cfal: settings, the method table, one job, ensembles."""

import importlib.util
import pathlib

import numpy as np
import pytest

from tfcell.experiments import tasks
from tfcell.papers import cfal
from tfcell.papers.cfal import methods, settings
from tfcell.training import strategy as strategy_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(name, variant):
    spec = importlib.util.spec_from_file_location(f"_cfg_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.mark.parametrize("name", ["cfal_idc", "cfal_crc"])
@pytest.mark.parametrize("variant", ["paper", "cpu", "smoke", "sweep", "cct"])
def test_configs_build_and_name_known_methods(name, variant):
    if variant == "cct" and name == "cfal_idc":
        pytest.skip("The CCT study (Table XIV) is CRC only.")
    config = _config(name, variant)
    for method in list(config.methods) + list(config.ablation) + list(config.ensemble.members):
        assert method in methods.METHODS and method in config.loss
    assert "sphereface" not in " ".join(config.ensemble.members)  # Sec. V-A.
    assert config.training.patience == 5  # Sec. IV-B.
    assert config.training.selection == "val_macro_f1"
    assert config.protocol.startswith("tfcell.papers.cfal:")


def test_idc_patient_split_keeps_patients_apart():
    config = _config("cfal_idc", "smoke")
    config.data.splits = ("patch", "patient")
    patch, patient = settings.idc_settings(config, repeat=0)
    subjects = {p: set(patient.table(p)["subject"]) for p in ("train", "val", "test")}
    assert not (subjects["train"] & subjects["test"]) and not (subjects["train"] & subjects["val"])
    assert not (subjects["val"] & subjects["test"])
    # The paper's split by patch does put patients on both sides.
    assert set(patch.table("train")["subject"]) & set(patch.table("test")["subject"])
    total = sum(patient.size(p) for p in ("train", "val", "test"))
    assert total == sum(patch.size(p) for p in ("train", "val", "test")) == len(patch.records)
    assert patient.pad_small == (50, 50)


@pytest.mark.real_data
def test_real_idc_has_the_published_counts(shared_data):
    config = _config("cfal_idc", "cpu")
    config.data.splits = ("patient",)
    (setting,) = settings.idc_settings(config, repeat=0)
    assert len(setting.records) == 7187  # ../shared/data/README.md: 7,187 patches.
    assert setting.records["subject"].nunique() == 199
    assert sum(setting.size(p) for p in ("train", "val", "test")) == 7187


def test_crc_long_tailed_is_skewed():
    config = _config("cfal_crc", "smoke")
    config.data.splits = ("standard", "long_tailed")
    config.synthetic.num_images = 900
    config.data.image_size = config.synthetic.image_size
    standard, skewed = settings.crc_settings(config, repeat=0)
    counts = skewed.class_counts("train") + skewed.class_counts("val")
    assert counts.argmax() == 8 and counts.argmin() == 0  # TUM most, ADI least (Fig. 7).
    assert standard.size("test") == skewed.size("test")  # "the testing dataset remains unchanged"


def test_one_job_records_selection_and_calibration():
    config = _config("cfal_idc", "smoke")
    config.training.epochs = 2
    (setting,) = settings.idc_settings(config, repeat=0)
    data = tasks.SettingData(setting, config.data.image_size)
    job = tasks.Job(
        key="patient/r0/cb_sphereface", name="cb_sphereface",
        method=methods.METHODS["cb_sphereface"], hp=dict(config.loss.cb_sphereface),
        data=data, config=config, seed=0, strategy=strategy_lib.get_strategy(), verbose=0,
    )  # fmt: skip
    result = cfal.IDC.task.run_job(job)
    (record,) = result.records
    probs = result.outputs["test_probabilities"]
    assert probs.shape == (setting.size("test"), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert record["epochs"] <= 2 and 1 <= record["best_epoch"] <= record["epochs"]
    assert record["selection"] == "val_macro_f1" and record["temperature"] > 0
    assert len(record["val_history"]) == record["epochs"]
    assert record["hparams"]["margin"] == 1.35  # Table IX 0.35, read as m = 1 + 0.35.


def test_ensembles_use_calibrated_probabilities():
    config = _config("cfal_idc", "smoke")
    (setting,) = settings.idc_settings(config, repeat=0)
    n = setting.size("test")
    labels = setting.labels("test")
    rng = np.random.default_rng(0)
    outputs = {}
    for m in config.ensemble.members:
        p = rng.dirichlet([1, 1], n)
        outputs[m] = {"test_probabilities": p, "test_labels": labels}
    out = cfal.IDC.combine(setting, outputs, config)
    assert set(out) == {f"ensemble_{r}" for r in config.ensemble.rules}
    (average,) = out["ensemble_average"]
    mean = np.mean([outputs[m]["test_probabilities"] for m in config.ensemble.members], axis=0)
    assert average["accuracy"] == pytest.approx(np.mean(mean.argmax(1) == labels))
    # A member without outputs (not run) is left out; fewer than two: no ensemble.
    assert cfal.IDC.combine(setting, {"cfal": outputs["cfal"]}, config) == {}


def test_crc_reads_the_publisher_layout(tmp_path):
    from PIL import Image

    from tfcell.data import kather

    rng = np.random.RandomState(0)
    for folder, per_class in ((kather.KATHER_TRAIN_FOLDER, 20), (kather.KATHER_TEST_FOLDER, 3)):
        for c, name in enumerate(kather.KATHER_CLASSES):
            (tmp_path / folder / name).mkdir(parents=True)
            for i in range(per_class + c):  # Unequal counts, so long_tailed can draw.
                pixels = rng.randint(0, 255, (24, 24, 3)).astype("uint8")
                Image.fromarray(pixels).save(tmp_path / folder / name / f"{name}-{i}.tif")
    config = _config("cfal_crc", "cpu")
    config.data.root = str(tmp_path)
    config.data.image_size = 16
    config.data.long_tail_total = None
    standard, skewed = settings.crc_settings(config, repeat=0)
    assert not standard.synthetic
    assert standard.size("test") == sum(3 + c for c in range(9))
    assert skewed.size("train") + skewed.size("val") < standard.size("train") + standard.size("val")
    data = tasks.SettingData(standard, 16)
    assert data.images.shape == (len(standard.records), 16, 16, 3)
    # Streaming from disk (the paper variant) gives batches of the same shapes.
    streamed = tasks.SettingData(standard, 16, in_memory=False)
    x, y = next(iter(streamed.dataset("test", 8)))
    assert tuple(x.shape) == (8, 16, 16, 3) and x.dtype.name == "float32"


def test_sphereface_with_the_feature_norm_radius_trains_and_predicts_classes():
    """scale=None (Liu et al.'s radius): the head applies the margin and outputs
    (N, C) scores whose argmax is the class, so "accuracy" is right."""
    config = _config("cfal_idc", "smoke")
    (setting,) = settings.idc_settings(config, repeat=0)
    data = tasks.SettingData(setting, config.data.image_size)
    hp = {**dict(config.loss.cb_sphereface), "scale": None}
    built = methods.METHODS["cb_sphereface"].build(data.info(), hp, config)
    built.model.compile(optimizer="adam", loss=built.loss, metrics=["accuracy"])
    x = data.images[setting.parts["train"]][:64].astype("float32")
    y = setting.labels("train")[:64]
    built.model.fit(x, y, epochs=1, verbose=0)
    scores = built.model.predict(x, verbose=0)
    assert scores.shape == (64, 2)
    _, accuracy = built.model.evaluate(x, y, verbose=0)
    assert accuracy == pytest.approx(np.mean(scores.argmax(1) == y), abs=1e-6)


def test_augment_flag_gives_the_dihedral_recipe():
    from tfcell.data import augmentation

    config = _config("cfal_idc", "smoke")
    assert cfal.IDC.augmentation(config, 0) is None  # The paper mentions none.
    config.training.augment = True
    assert isinstance(cfal.IDC.augmentation(config, 0), augmentation.RandomDihedral)
