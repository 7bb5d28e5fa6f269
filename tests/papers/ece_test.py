"""The exclusive cross-entropy paper package: patient-level tile splits, crops
whose targets follow their images, sparse targets that never tell ECE a
dropped nucleus is background, annealing under `fit`, and the report tables."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest

from tfcell import losses, training
from tfcell.data import nuclei
from tfcell.papers import ece
from tfcell.papers.ece import data, methods, report, task

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(variant="smoke"):
    spec = importlib.util.spec_from_file_location("_cfg", ROOT / "configs" / "ece_nuclei.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def test_synthetic_settings_share_one_patient_level_split_per_fraction():
    config = _config()
    settings = ece.NUCLEI.settings(config, 0)
    assert [s.name for s in settings] == ["frac030", "frac100"]
    assert [s.fraction for s in settings] == [0.3, 1.0]
    patients = settings[0].records["patient"].to_numpy()
    for s in settings:
        for part in ("val", "test"):
            np.testing.assert_array_equal(s.parts[part], settings[0].parts[part])
            assert not set(patients[s.parts["train"]]) & set(patients[s.parts[part]])
        assert not set(patients[s.parts["val"]]) & set(patients[s.parts["test"]])


@pytest.mark.real_data
def test_monuseg_tiles_split_by_patient_with_true_instances_where_xml(shared_data):
    config = _config("cpu")
    table = data.tile_table(config)
    assert len(table) == 30
    assert (table["annotation_path"] != "").sum() == 13
    parts = data.split_tiles(table, 0.2, 0.2, seed=0)
    assert sum(len(p) for p in parts.values()) == 30
    patients = table["patient"].to_numpy()
    assert not set(patients[parts["train"]]) & set(patients[parts["test"]])
    tiles = data.load_tiles(table.iloc[:2])
    for tile in tiles:
        assert tile.image.shape == (1000, 1000, 3) and tile.instances.shape == (1000, 1000)
        assert tile.instances.max() > 50  # Hundreds of nuclei per MoNuSeg tile.


def test_crops_move_image_and_target_together():
    rng = np.random.default_rng(0)
    # The target is a function of the image (bright pixels are "nucleus" 7).
    image = rng.integers(0, 255, (40, 40, 3)).astype("uint8")
    kept = np.where(image[..., 0] > 200, 7, 0).astype("int32")
    batches = list(task.crop_batches([image], [kept], 16, 4, 8, rng, "segmentation"))
    assert [b[0].shape for b in batches] == [(4, 16, 16, 3), (4, 16, 16, 3)]
    for x, y in batches:
        np.testing.assert_array_equal(y, (x[..., 0] > 200).astype("int32"))
    (x, y), *_ = task.crop_batches([image], [kept], 16, 2, 2, rng, "detection")
    assert y.shape == (2, 2, 2, 6)
    with pytest.raises(ValueError, match="crop_size"):
        next(task.crop_batches([image], [kept], 64, 2, 2, rng, "segmentation"))


def test_dropped_nuclei_are_unannotated_for_ece_and_background_for_ce():
    """The sparsifier marks dropped nuclei unannotated, never background: with
    ECE (label 0 = unannotated) a dropped nucleus costs nothing before the
    annealing lets the sampled term in; with CE it is pushed to background."""
    instances = np.zeros((8, 8), "int32")
    instances[1:3, 1:3], instances[5:7, 5:7] = 1, 2
    kept, annotated = nuclei.sparsify_annotations(instances, 0.5, seed=0)
    dropped = (instances > 0) & (kept == 0)
    assert dropped.any() and not annotated[dropped].any() and annotated[kept > 0].all()
    target = (kept > 0).astype("int32")[None]
    logits = np.zeros((1, 8, 8, 2), "float32")
    logits[..., 1] = 3.0  # Confident "nucleus" everywhere.
    ece_loss = losses.exclusive_crossentropy(
        target, logits, epoch=0, exclusivity_epoch=50, sampling_epoch=150, temperature=10.0
    )
    ce_loss = keras.ops.sparse_categorical_crossentropy(target, logits, from_logits=True)
    ece_loss, ce_loss = np.asarray(ece_loss)[0], np.asarray(ce_loss)[0]
    assert np.all(ece_loss[dropped] == 0.0) and np.all(ce_loss[dropped] > 3.0)
    assert np.allclose(ece_loss[kept > 0], ce_loss[kept > 0])  # Annotated: plain CE.


class _Record(keras.callbacks.Callback):
    def __init__(self, loss):
        super().__init__()
        self.loss, self.epochs = loss, []

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.epochs.append(float(keras.ops.convert_to_numpy(self.loss.epoch)))


def test_ece_annealing_follows_the_epochs_under_fit():
    config = _config("cpu")
    built = methods.METHODS["unet_ece"].build(None, dict(config.loss), _small(config))
    loss = built.loss
    assert (loss.exclusivity_epoch, loss.sampling_epoch) == (20 * 50 / 300, 10.0)
    assert loss.temperature == pytest.approx(20 * 10 / 300)
    model = built.model
    model.compile(optimizer="adam", loss=loss)
    record = _Record(loss)
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32") * 255
    y = np.zeros((2, 16, 16), "int32")
    model.fit(x, y, epochs=4, verbose=0, callbacks=built.callbacks(model, None) + [record])
    assert record.epochs == [0.0, 1.0, 2.0, 3.0]
    # The thresholds at those epochs: 0.5 * sigmoid((e - midpoint) / temperature).
    mid, temp = loss.exclusivity_epoch, loss.temperature
    for e in record.epochs:
        expected = 0.5 / (1 + np.exp(-(e - mid) / temp))
        got = float(keras.ops.convert_to_numpy(losses.exclusive._annealing(e, mid, temp, 0.5)))
        assert np.isclose(got, expected)
    # Scaled annealing keeps the paper's share of the schedule (50/300, 150/300).
    assert config.loss.exclusivity_epoch / config.training.epochs == pytest.approx(50 / 300)
    assert config.loss.sampling_epoch / config.training.epochs == pytest.approx(150 / 300)


def _small(config):
    small = config.copy_and_resolve_references()
    with small.unlocked():
        small.model.unet_width, small.model.unet_depth = 2, 2
    return small


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_builds_with_its_loss(name):
    config = _small(_config())
    built = methods.METHODS[name].build(None, dict(config.loss), config)
    exclusive = name.endswith("_ece")
    if name.startswith("unet"):
        assert isinstance(built.loss, losses.ExclusiveCrossentropyLoss) == exclusive
    else:
        assert isinstance(built.loss, losses.DetectionLoss)
        assert built.loss.exclusive == exclusive
        assert (built.loss.lambda_background, built.loss.lambda_objects) == (10.0, 1.0)
    callbacks = built.callbacks(built.model, None)
    assert any(isinstance(c, training.EpochVariableCallback) for c in callbacks) == exclusive or (
        name.startswith("yolo")
    )


@pytest.mark.parametrize("variant", ["paper", "cpu", "smoke"])
def test_config_variants_cite_the_supplement(variant):
    config = _config(variant)
    assert config.evaluation.iou_threshold == 0.5 and config.evaluation.nms_threshold == 0.2
    assert config.loss.lambda_background == 10.0 and config.loss.lambda_objects == 1.0
    assert config.input_contract.crop_size == config.data.crop_size
    if variant == "paper":
        assert config.optimizer.learning_rate == 1e-4 and config.training.batch_size == 16
        assert config.optimizer.accumulation == 4 and config.training.epochs == 300
        assert (config.loss.exclusivity_epoch, config.loss.sampling_epoch) == (50.0, 150.0)
        assert config.data.crop_size == 512 and tuple(config.data.fractions) == (0.3, 0.6, 0.9, 1.0)


def test_report_tables_put_the_paper_beside_measured_values():
    config = _config()
    records = []
    for seed, (ce, e) in enumerate([(0.40, 0.70), (0.50, 0.74)]):
        for method, value in (("unet_ce", ce), ("unet_ece", e)):
            records.append({"method": method, "title": method, "task": "segmentation",
                            "fraction": 0.3, "test_set": "test", "dice": value,
                            "aji": value / 2, "repeat": seed})  # fmt: skip
        records.append({"method": "yolo_ece", "title": "y", "task": "detection",
                        "fraction": 1.0, "test_set": "test", "f1": 0.5, "precision": 0.6,
                        "recall": 0.4, "repeat": seed})  # fmt: skip
    seg = report.segmentation_table(records, config)
    assert "0.720 +- 0.028" in seg and "| paper, TNBC: ECE | 0.80 | 0.58 |" in seg
    det = report.detection_table(records, config)
    assert "0.500 +- 0.000" in det and "paper, Kumar: CE | 0.63" in det


def test_a_further_test_set_in_the_tnbc_layout_is_tested_by_every_setting(tmp_path):
    """`--config.data.test_roots`: a TNBC-layout folder (Slide_<k>/ + GT_<k>/)
    becomes a part `test:<name>` of every setting, never trained on."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in (1, 2):
        for i in range(2):
            (tmp_path / f"Slide_{k:02d}").mkdir(exist_ok=True)
            (tmp_path / f"GT_{k:02d}").mkdir(exist_ok=True)
            image = rng.integers(0, 255, (48, 48, 3)).astype("uint8")
            mask = np.zeros((48, 48), "uint8")
            mask[5:15, 5:15] = mask[30:40, 20:30] = 255
            Image.fromarray(image).save(tmp_path / f"Slide_{k:02d}" / f"{k}_{i}.png")
            Image.fromarray(mask).save(tmp_path / f"GT_{k:02d}" / f"{k}_{i}.png")
    config = _config()
    with config.unlocked():
        config.data.test_roots = (f"tnbc={tmp_path}",)
    settings = ece.NUCLEI.settings(config, 0)
    for s in settings:
        extra = s.parts["test:tnbc"]
        assert len(extra) == 4 and not set(extra) & set(s.parts["train"])
    tiles = data.load_tiles(settings[0].records.iloc[settings[0].parts["test:tnbc"]])
    assert all(t.instances.max() == 2 and not t.true_instances for t in tiles)
