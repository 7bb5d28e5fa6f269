"""The heterogeneity paper package: patient-level folds that never leak, one
subject per patient and class, crops and 5-crop TTA, subject-level metrics,
the config's cited values and the report's tables."""

import pathlib

import keras
import ml_collections
import numpy as np
import pandas as pd
import pytest

from tfcell import training
from tfcell.data import augmentation
from tfcell.experiments import settings as settings_lib
from tfcell.papers import heterogeneity
from tfcell.papers.heterogeneity import data, methods, report, settings, task

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(variant="smoke", **data_overrides):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_cfg", ROOT / "configs" / "heterogeneity_cnmc.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(variant)
    with config.unlocked():
        for key, value in data_overrides.items():
            config.data[key] = value
    return config


def _assert_patient_level(setting_list, table):
    patients = table["patient"].astype(str).to_numpy()
    test = setting_list[0].parts["test"]
    val_union = []
    for s in setting_list:
        groups = {p: set(patients[s.parts[p]]) for p in ("train", "val", "test")}
        assert not groups["train"] & groups["val"]
        assert not groups["train"] & groups["test"]
        assert not groups["val"] & groups["test"]
        np.testing.assert_array_equal(s.parts["test"], test)  # One test set for the ensemble.
        np.testing.assert_array_equal(s.parts["test:fold"], s.parts["val"])
        assert len(np.unique(s.labels("val"))) == 2  # Stratified: both classes in every fold.
        val_union.append(s.parts["val"])
    val_union = np.concatenate(val_union)
    # The validation folds partition the development rows (each patient in one fold).
    assert len(val_union) == len(np.unique(val_union)) == len(table) - len(test)


def test_synthetic_folds_are_patient_level_and_share_one_test_set():
    config = _config()
    table = data.records(config)
    folds = settings.cnmc_settings(table, config, repeat=0)
    assert [s.name for s in folds] == ["fold0", "fold1", "fold2"]
    _assert_patient_level(folds, table)


@pytest.mark.real_data
def test_idc_folds_are_patient_level_with_one_subject_per_patient_and_class(shared_data):
    config = _config("cpu")
    table = data.records(config)
    # The cpu config's stratified 4,500 of the 7,187 patches keeps nearly every patient.
    assert table["patient"].nunique() >= 195 and len(table) == 4500
    # Each IDC patient holds both classes: one loss subject per (patient, class).
    assert table.groupby("subject")["label"].nunique().max() == 1
    assert (table["subject"].str.split(":").str[0] == table["patient"]).all()
    folds = settings.cnmc_settings(table, config, repeat=0)
    assert len(folds) == 7
    _assert_patient_level(folds, table)
    n_test = table["patient"].iloc[folds[0].parts["test"]].nunique()
    assert abs(n_test - 0.15 * table["patient"].nunique()) <= 4
    # The trainer's subject table: training subjects get their class, all others -1.
    s = folds[0]
    maps = s.id_maps()
    labels = training.subject_labels_from(
        s.records["subject"].to_numpy()[s.parts["train"]], s.labels("train"), maps["subject"]
    )
    val_ids = {maps["subject"][v] for v in s.records["subject"].to_numpy()[s.parts["val"]]}
    assert all(labels[i] == -1 for i in val_ids)
    assert sum(v != -1 for v in labels) == s.records["subject"].iloc[s.parts["train"]].nunique()


def test_test_patients_count_fraction_and_errors():
    table = pd.DataFrame(
        {"patient": np.repeat([f"p{i}" for i in range(20)], 5), "label": np.tile([0, 1], 50)}
    )
    dev, test = settings.split_test_patients(table, 4.0, seed=0)
    assert table["patient"].iloc[test].nunique() == 4
    assert not set(table["patient"].iloc[test]) & set(table["patient"].iloc[dev])
    _, test = settings.split_test_patients(table, 0.25, seed=0)
    assert table["patient"].iloc[test].nunique() == 5
    with pytest.raises(ValueError, match="test_patients"):
        settings.split_test_patients(table, 20.0, seed=0)


def test_check_disjoint_names_a_leaking_patient():
    table = pd.DataFrame({"label": [0, 1, 0, 1], "patient": ["a", "b", "c", "a"]})
    s = settings_lib.Setting("bad", table, {"train": [0, 1], "val": [2], "test": [3]}, ("x", "y"))
    with pytest.raises(AssertionError, match="patient"):
        settings.check_disjoint(s)


def test_random_crop_takes_exact_windows_and_the_centre():
    images = np.arange(2 * 8 * 8 * 3, dtype="float32").reshape(2, 8, 8, 3)
    centre = task.RandomCrop(4, random=False)(images, np.array([1, 2]))
    np.testing.assert_array_equal(centre, images[:, 2:6, 2:6])
    crops = np.asarray(task.RandomCrop(4, random=True)(images, np.array([3, 4])))
    assert crops.shape == (2, 4, 4, 3)
    for n in range(2):  # Zoom 0: every random crop is an exact 4 x 4 window.
        windows = [images[n, y : y + 4, x : x + 4] for y in range(5) for x in range(5)]
        assert any(np.allclose(crops[n], w, atol=1e-3) for w in windows)
    with pytest.raises(ValueError, match="crop_size"):
        task.RandomCrop(9)(images, np.array([0, 0]))


class _MeanLogit(keras.layers.Layer):
    """Logits (m, -m) with m the mean pixel / 100: each crop gives its own score."""

    def call(self, x):
        m = keras.ops.mean(x, axis=(1, 2, 3)) / 100.0
        return keras.ops.stack([m, -m], axis=1)


def test_tta_averages_probabilities_over_the_four_corners_and_the_centre():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 10, 10, 3)).astype("uint8")
    table = pd.DataFrame({"label": [0, 1] * 3, "image": list(images), "path": ""})
    table.attrs["class_names"] = ("a", "b")
    s = settings_lib.Setting("s", table, {"train": [0, 1], "val": [2, 3], "test": [4, 5]},
                             ("a", "b"))  # fmt: skip
    model = keras.Sequential([keras.Input((6, 6, 3)), _MeanLogit()])
    cropped = task.CroppedSettingData(s, 10, 6, tta="five_crop")
    scores = cropped.predict(model, "test", batch_size=4)
    x = images[[4, 5]].astype("float64")
    windows = augmentation.five_crop(x, 6)  # (N, 5, 6, 6, 3): corners then centre.
    m = np.asarray(windows).mean(axis=(2, 3, 4)) / 100.0
    p = 1.0 / (1.0 + np.exp(-2.0 * m))  # softmax([m, -m])[0]
    np.testing.assert_allclose(np.exp(scores[:, 0]), p.mean(axis=1), rtol=1e-5)
    centre = task.CroppedSettingData(s, 10, 6, tta="centre").predict(model, "test", 4)
    np.testing.assert_allclose(centre[:, 0], x[:, 2:8, 2:8].mean(axis=(1, 2, 3)) / 100, rtol=1e-5)
    with pytest.raises(ValueError, match="tta"):
        task.CroppedSettingData(s, 10, 6, tta="ten_crop")


def test_subject_metrics_by_hand():
    out = task.subject_metrics(
        ["a", "a", "b", "b", "b", "c"], [0, 1, 1, 1, 0, 1], [0, 0, 1, 1, 1, 0]
    )
    assert out["subject_accuracy"] == {"a": 0.5, "b": 2 / 3, "c": 0.0}
    assert out["num_subjects"] == 3 and out["subjects_below_half"] == 1
    assert out["subject_accuracy_min"] == 0.0
    np.testing.assert_allclose(out["subject_accuracy_mean"], (0.5 + 2 / 3) / 3)
    np.testing.assert_allclose(out["subject_accuracy_std"], np.std([0.5, 2 / 3, 0], ddof=1))


@pytest.mark.parametrize("variant", ["paper", "cpu", "smoke"])
def test_config_variants_cite_the_papers_values(variant):
    config = _config(variant)
    # Sec. 5.1: lambda 0.05, 0.05, 0.005; Table 2's rows switch terms off.
    assert dict(config.loss.heterogeneity) == {
        "lambda_class": 0.05, "lambda_subject": 0.05, "lambda_subject_class": 0.005
    }  # fmt: skip
    assert set(dict(config.loss.ce).values()) == {0.0}
    assert config.loss.ce_class.lambda_subject == config.loss.ce_class.lambda_subject_class == 0
    assert config.loss.ce_subject_class.lambda_subject_class == 0
    assert config.loss.ce_subject_class.lambda_subject == 0.05
    assert config.optimizer.name == "adam" and config.training.batch_size == 16
    assert (config.schedule.stage1_lr, config.schedule.stage2_lr) == (1e-3, 1e-5)
    assert config.schedule.monitor == "loss" and config.training.selection == "none"
    assert tuple(config.ensemble.rules[:2]) == ("theta_0.95", "theta_0.98")
    assert config.evaluation.tta == "five_crop"
    assert config.input_contract.crop_size == config.data.crop_size
    if variant == "paper":
        assert config.model.backbone == "inception_v3"
        assert (config.data.image_size, config.data.crop_size) == (400, 299)
        assert config.data.num_folds == 7 and config.data.source == "cnmc"
        assert config.schedule.stage1_max_epochs == 0  # Only the loss ends stage 1.
    if variant == "cpu":
        assert config.data.num_folds == 7 and config.data.source == "idc"


def test_every_ablation_row_is_one_trainer_with_its_lambdas():
    config = _config()
    info = type("Info", (), {"num_classes": 2})()
    for name, method in methods.METHODS.items():
        featurizer = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        classifier = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        bound = method.with_subject_labels([0, 1, -1], config.schedule)
        trainer = bound.make_trainer(featurizer, classifier, info, dict(config.loss[name]))
        assert isinstance(trainer, training.HeterogeneityTrainer)
        assert trainer.lambda_class == config.loss[name].lambda_class
        assert trainer.lambda_subject_class == config.loss[name].lambda_subject_class
        (schedule,) = bound.make_callbacks(trainer, None, {})
        assert isinstance(schedule, training.TwoStageSchedule)
        assert schedule.stage1_max_epochs == 2 and schedule.stage2_lr == 1e-5
    with pytest.raises(RuntimeError, match="subjects' classes"):
        methods.METHODS["ce"].make_trainer(featurizer, classifier, info, {})


def test_config_json_contract_names_the_data_classes():
    config = _config()
    table = data.records(config)
    data.check_contract(config, table.attrs["class_names"])
    with pytest.raises(ValueError, match="input_contract"):
        data.check_contract(config, ("hem", "all"))
    with pytest.raises(ValueError, match="data.root"):
        data.records(_config("paper"))


def _record(method, setting, test_set, f1, acc, **extra):
    return {
        "method": method, "title": method, "setting": setting, "repeat": 0, "kind": "single",
        "test_set": test_set, "f1_weighted": f1, "accuracy": acc, **extra,
    }  # fmt: skip


def test_report_tables_show_measured_values_and_paired_tests():
    config = ml_collections.ConfigDict(_config().to_dict())
    records = []
    for k, (ce, het) in enumerate([(0.80, 0.85), (0.70, 0.78), (0.75, 0.79)]):
        for method, value in (("ce", ce), ("heterogeneity", het)):
            records.append(_record(method, f"fold{k}", "test:fold", value, value))
            records.append(_record(method, f"fold{k}", "test", value - 0.1, value - 0.1))
    records.append({"method": "heterogeneity", "title": "h", "kind": "ensemble",
                    "rule": "theta_0.95", "setting": "combined", "repeat": 0,
                    "test_set": "test", "f1_weighted": 0.9, "accuracy": 0.9})  # fmt: skip
    table = report.ablation_table(records, config)
    assert "80.67 +- 3.79" in table  # L_H on the validation folds: mean +- sample std, %.
    assert "| 90.00 |" in table and "89.94" in table  # Ensemble; the paper's Table 2.
    tests = report.paired_tests_table(records, config)
    assert "+5.67" in tests  # Mean difference in points.
    assert "nan" not in tests
    folds = report.fold_table(records, config)
    assert "95.26" in folds and "ensemble (theta_0.95)" in folds


def test_protocol_ensembles_the_fold_models_on_the_shared_test_set():
    config = _config()
    table = data.records(config)
    folds = settings.cnmc_settings(table, config, 0)
    n_test = len(folds[0].parts["test"])
    labels = folds[0].labels("test")
    rng = np.random.default_rng(0)
    outputs = {}
    for s in folds:
        p = rng.dirichlet([1, 1], n_test)
        outputs[s.name] = {
            m: {"test_scores": np.log(p), "test_labels": labels} for m in config.methods
        }
    combined = heterogeneity.CNMC.combine_repeat(folds, outputs, config)
    assert sorted(combined) == sorted(heterogeneity.CNMC.combined_names(config))
    rows = combined["heterogeneity_ensemble"]
    assert [r["rule"] for r in rows] == list(config.ensemble.rules)
    from tfcell.evaluation import ensembles

    probs = [np.exp(outputs[s.name]["heterogeneity"]["test_scores"]) for s in folds]
    predictions, _ = ensembles.theta_ensemble(probs, 0.95)
    np.testing.assert_allclose(rows[0]["accuracy"], np.mean(predictions == labels))


def test_paper_reads_cnmc_in_its_published_layout(tmp_path):
    """`paper`: C-NMC's TCIA layout (training folds + the preliminary test set with
    its labels CSV), subject ids from the file names, one class per subject."""
    from PIL import Image

    def bmp(path, value):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)

    train = tmp_path / "C-NMC_Leukemia" / "training_data"
    value = 0
    for s in range(14):  # 9 ALL subjects, 5 healthy, 4 cells each, over 3 folds.
        cls = "all" if s < 9 else "hem"
        name = f"{s + 1}" if cls == "all" else f"H{s + 1}"
        for i in range(4):
            value += 1
            bmp(train / f"fold_{s % 3}" / cls / f"UID_{name}_{i + 1}_1_{cls}.bmp", value)
    prelim = tmp_path / "C-NMC_Leukemia" / "validation_data" / "C-NMC_test_prelim_phase_data"
    bmp(prelim / "1.bmp", 200)
    bmp(prelim / "2.bmp", 201)
    (prelim.parent / "C-NMC_test_prelim_phase_data_labels.csv").write_text(
        "Patient_ID,new_names,labels\nUID_60_1_1_all.bmp,1.bmp,1\nUID_H61_1_1_hem.bmp,2.bmp,0\n"
    )
    config = _config("paper")
    with config.unlocked():
        config.data.root = str(tmp_path / "C-NMC_Leukemia")
        config.data.num_folds = 3
        config.data.test_patients = 3.0
    table = data.records(config)
    assert len(table) == 14 * 4 + 2 and table["patient"].nunique() == 16
    assert (table["subject"] == table["patient"]).all()  # One class per C-NMC subject.
    assert tuple(table.attrs["class_names"]) == tuple(config.input_contract.class_names)
    folds = settings.cnmc_settings(table, config, 0)
    assert len(folds) == 3
    for s in folds:
        settings.check_disjoint(s)
    assert table["patient"].iloc[folds[0].parts["test"]].nunique() == 3
