"""Tests for tfcell.experiments: data settings, the method registry, one training."""

import importlib.util
import pathlib

import numpy as np
import pytest

from tfcell.experiments import data, methods, runner
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


def test_idc_patient_split_keeps_patients_apart():
    config = _config("cfal_idc", "smoke")
    config.data.splits = ("patch", "patient")
    patch, patient = data.idc_settings(config, repeat=0)
    train, val, test = (set(s.subjects) for s in (patient.train, patient.val, patient.test))
    assert not (train & test) and not (train & val) and not (val & test)
    # The paper's split by patch does put patients on both sides.
    assert set(patch.train.subjects) & set(patch.test.subjects)
    total = len(patient.train) + len(patient.val) + len(patient.test)
    assert total == len(patch.train) + len(patch.val) + len(patch.test)


@pytest.mark.real_data
def test_real_idc_has_the_published_counts(shared_data):
    config = _config("cfal_idc", "cpu")
    config.data.splits = ("patient",)
    (setting,) = data.idc_settings(config, repeat=0)
    n = len(setting.train) + len(setting.val) + len(setting.test)
    assert n == 7187  # ../shared/data/README.md: 7,187 patches, 199 patients.
    subjects = set(setting.train.subjects) | set(setting.val.subjects) | set(setting.test.subjects)
    assert len(subjects) == 199
    assert setting.train.x.shape[1:] == (32, 32, 3)


def test_crc_long_tailed_is_skewed():
    config = _config("cfal_crc", "smoke")
    config.data.splits = ("standard", "long_tailed")
    config.synthetic.num_images = 900
    config.data.image_size = config.synthetic.image_size
    standard, skewed = data.crc_settings(config, repeat=0)
    counts = skewed.class_counts() + np.bincount(skewed.val.y, minlength=9)
    assert counts.argmax() == 8 and counts.argmin() == 0  # TUM most, ADI least (Fig. 7).
    assert len(standard.test) == len(skewed.test)  # "the testing dataset remains unchanged"


def test_train_method_record():
    config = _config("cfal_idc", "smoke")
    (setting,) = data.idc_settings(config, repeat=0)
    model, record, probs = runner.train_method(
        "cb_sphereface", setting, config, 0, strategy_lib.get_strategy(), verbose=0
    )
    assert probs.shape == (len(setting.test), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert record["epochs"] == 1 and len(record["epoch_times"]) == 1
    assert record["hparams"]["margin"] == 1.35  # Table IX 0.35, read as m = 1 + 0.35.


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
    standard, skewed = data.crc_settings(config, repeat=0)
    assert not standard.synthetic and standard.train.x.shape[1:] == (16, 16, 3)
    assert len(standard.test) == sum(3 + c for c in range(9))
    assert len(skewed.train) + len(skewed.val) < len(standard.train) + len(standard.val)
    # Streaming from disk (the paper variant) gives the same batches' shapes.
    config.data.in_memory = False
    standard = data.crc_settings(config, repeat=0)[0]
    x, y = next(iter(data.make_dataset(standard.test, 8, 16)))
    assert tuple(x.shape) == (8, 16, 16, 3) and x.dtype.name == "float32"
