"""The harness runs a paper it has never seen: a minimal second "paper" (trainer
methods, leave-one-domain-out, synthetic white cells), with resume after an
interrupted run, plus the settings builders, selection and the workdir."""

import json
import os
import sys
import types

import keras
import ml_collections
import numpy as np
import pytest

from tfcell import training
from tfcell.data import synthetic
from tfcell.evaluation import report
from tfcell.experiments import (
    collect,
    methods,
    protocol,
    runner,
    selection,
    settings,
    tasks,
    workdir,
)


class _Interrupted(Exception):
    pass


class ToyTask(tasks.ClassificationTask):
    """Counts the jobs it trains and can be told to 'die' at one."""

    def __init__(self):
        self.trained = []
        self.die_at = None

    def run_job(self, job):
        if job.key == self.die_at:
            raise _Interrupted(job.key)
        self.trained.append(job.key)
        return super().run_job(job)


class ToyPaper(protocol.Protocol):
    """Two trainers, leave-one-domain-out over three synthetic hospitals."""

    docs_marker = "toy:measured"

    def __init__(self):
        super().__init__()
        self.task = ToyTask()

    def settings(self, config, repeat):
        records = synthetic.white_cells(
            config.data.num_images, image_size=config.data.image_size, num_classes=3,
            domains=3, subjects_per_domain=3, seed=config.seed + repeat,
        )  # fmt: skip
        return settings.leave_one_domain_out(
            records, 0.2, config.seed + repeat, synthetic=True, description="toy cells"
        )

    def methods(self, config):
        return {
            "erm": methods.TrainerMethod("ERM", lambda f, c, info, hp: training.ERMTrainer(f, c)),
            "coral": methods.TrainerMethod(
                "CORAL",
                lambda f, c, info, hp: training.CORALTrainer(
                    f, c, num_domains=info.num_domains, penalty_weight=hp["weight"]
                ),
                required=("weight",),
            ),
        }

    def write_report(self, workdir_path, config, records, run_info):
        path = os.path.join(workdir_path, "report.md")
        with open(path, "w") as f:
            f.write(f"# toy\n\n{len(records)} records\n")
        return path

    def collect(self, name, config, records, run_info):
        rows = [[r["setting"], r["method"], f"{r['accuracy']:.3f}"] for r in records]
        return report.markdown_table(["setting", "method", "accuracy"], rows)


TOY = ToyPaper()


def _config():
    config = ml_collections.ConfigDict()
    config.protocol = "tfcell_toy_paper:TOY"
    config.seed = 0
    config.num_repeats = 1
    config.save_model_repeats = 0
    config.data = {"num_images": 90, "image_size": 16}
    config.model = {"backbone": "small_cnn", "widths": (4,), "embedding_dim": 8}
    config.loss = {"erm": {}, "coral": {"weight": 1.0}}
    config.optimizer = {"name": "adam", "learning_rate": 1e-3}
    config.training = {
        "batch_size": 16, "epochs": 2, "patience": 5, "selection": "val_accuracy",
        "verbose": 0, "tensorboard": False, "steps_per_epoch": 0,
    }  # fmt: skip
    config.sweep = {"enabled": False}
    return config


@pytest.fixture
def registered():
    # The collector finds a protocol by its config's "module:NAME".
    module = types.ModuleType("tfcell_toy_paper")
    module.TOY = TOY
    sys.modules["tfcell_toy_paper"] = module
    TOY.task.trained.clear()
    TOY.task.die_at = None
    yield TOY


def test_a_second_paper_runs_and_resumes_after_a_kill(tmp_path, registered):
    config = _config()
    work = str(tmp_path / "toy")
    TOY.task.die_at = "lodo_hospital_1/r0/coral"
    with pytest.raises(_Interrupted):
        runner.run(TOY, config, work)
    first = list(TOY.task.trained)
    assert first == ["lodo_hospital_0/r0/erm", "lodo_hospital_0/r0/coral", "lodo_hospital_1/r0/erm"]
    assert not report.is_done(work)
    # The same command again: finished jobs are skipped, the rest run, once each.
    TOY.task.die_at = None
    TOY.task.trained.clear()
    path = runner.run(TOY, config, work)
    assert TOY.task.trained == [
        "lodo_hospital_1/r0/coral", "lodo_hospital_2/r0/erm", "lodo_hospital_2/r0/coral",
    ]  # fmt: skip
    assert report.is_done(work) and os.path.exists(path)
    records = report.read_results(work)
    jobs = [r["job"] for r in records]
    assert len(jobs) == len(set(jobs)) == 6
    for r in records:
        assert r["test_set"] == "test" and 0.0 <= r["accuracy"] <= 1.0
        assert r["selection"] == "val_accuracy" and r["temperature"] > 0
        assert r["precise_bn"]  # small_cnn has BatchNorm: statistics re-estimated.
    run_info = json.load(open(os.path.join(work, "run.json")))
    assert run_info["resumed"] and run_info["jobs_trained_this_attempt"] == 3
    # A third run has nothing left to do.
    TOY.task.trained.clear()
    runner.run(TOY, config, work)
    assert TOY.task.trained == []
    # The generic collector renders the toy paper's tables from the workdir.
    (text,) = collect.collect([work]).values()
    assert "lodo_hospital_2" in text and "coral" in text


def test_resume_refuses_another_config_and_restart_starts_over(tmp_path, registered):
    config = _config()
    work = str(tmp_path / "toy")
    config.data.num_images = 60
    config.training.epochs = 1
    runner.run(TOY, config, work)
    other = _config()
    with pytest.raises(workdir.ConfigMismatchError, match="--restart"):
        runner.run(TOY, other, work)
    TOY.task.trained.clear()
    other.data.num_images = 60
    other.training.epochs = 1
    other.training.verbose = 2  # Verbosity may change between a run and its resume.
    runner.run(TOY, other, work)
    assert TOY.task.trained == []
    runner.run(TOY, other, work, restart=True)
    assert len(TOY.task.trained) == 6


def test_workdir_drops_lines_of_unfinished_jobs(tmp_path):
    config = _config()
    wd = workdir.Workdir(str(tmp_path), config)
    wd.finish("a/r0/m", [{"method": "m", "f1": 0.5}], {"x": np.arange(3)})
    report.ResultsWriter(str(tmp_path)).write({"method": "n", "job": "a/r0/n"})  # No done.
    again = workdir.Workdir(str(tmp_path), config)
    assert [r["job"] for r in again.records()] == ["a/r0/m"]
    np.testing.assert_array_equal(again.outputs("a/r0/m")["x"], np.arange(3))
    assert again.outputs("a/r0/n") is None
    with pytest.raises(ValueError, match="no '/'"):
        workdir.job_key("a/b", 0, "m")


def _records(n=120, domains=3, subjects=4, seed=0):
    return synthetic.white_cells(
        n, image_size=8, num_classes=3, domains=domains, subjects_per_domain=subjects, seed=seed
    )


def test_settings_builders_keep_subjects_and_domains_apart():
    records = _records()
    by_subject = settings.holdout("s", records, 0.3, 0.2, 0, by="subject")
    parts = {p: set(by_subject.table(p)["subject"]) for p in ("train", "val", "test")}
    assert not (parts["train"] & parts["test"]) and not (parts["val"] & parts["test"])
    folds = settings.subject_kfold(records, 3, 0.2, 0)
    tested = np.concatenate([f.parts["test"] for f in folds])
    assert sorted(tested) == list(range(len(records)))  # Every record tested once.
    for f in settings.leave_one_domain_out(records, 0.2, 0):
        held = set(f.table("test")["domain"])
        assert len(held) == 1 and not held & set(f.table("train")["domain"])
    matrix = settings.domain_matrix(records, 0.2, 0.3, 0)
    assert len(matrix) == 3 and all(len(s.test_parts) == 3 for s in matrix)
    for s in matrix:
        assert set(s.table("train")["domain"]) == {s.name.removeprefix("from_")}
    # Subject ids are global: every part numbers a subject the same way.
    maps = folds[0].id_maps()
    assert len(maps["subject"]) == records["subject"].nunique()


def test_setting_rejects_labels_outside_the_class_list():
    records = _records(30)
    records.loc[3, "label"] = 7
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        settings.holdout("s", records, 0.3, 0.2, 0)


def test_validation_selection_restores_the_best_epoch():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    labels = np.array([0, 1, 0, 1])
    # Epoch quality by design: 2nd epoch perfect, later ones wrong.
    good = np.eye(2)[labels]
    plan = iter([1 - good, good, 1 - good, 1 - good, 1 - good])
    kept = {}

    def predict():
        kept.setdefault("weights", []).append(model.get_weights())
        return next(plan)

    selector = selection.ValidationSelection(predict, labels, 2, "val_macro_f1", patience=2)
    history = model.fit(
        np.zeros((4, 2)), np.zeros((4, 2)), epochs=5, verbose=0, callbacks=[selector]
    )
    assert selector.best_epoch == 1 and selector.best_value == 1.0
    assert len(history.history["loss"]) == 4  # Stopped after 2 epochs without improvement.
    assert history.history["val_macro_f1"][1] == 1.0  # Logged for other callbacks.
    for restored, best in zip(model.get_weights(), kept["weights"][1]):
        np.testing.assert_array_equal(restored, best)


def test_selection_none_logs_every_epoch_and_keeps_the_last_weights():
    """monitor="none": validation curves only; the method's callbacks (e.g. the
    heterogeneity paper's TwoStageSchedule) decide the final weights."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    labels = np.array([0, 1, 0, 1])
    good = np.eye(2)[labels]
    plan = iter([1 - good, good, 1 - good])
    selector = selection.ValidationSelection(lambda: next(plan), labels, 2, "none", patience=1)
    history = model.fit(
        np.ones((4, 2)), np.zeros((4, 2)), epochs=3, verbose=0, callbacks=[selector]
    )
    assert len(history.history["loss"]) == 3  # No early stop.
    assert history.history["val_accuracy"] == [0.0, 1.0, 0.0]
    assert selector.best_epoch == 2  # The last epoch: nothing selected ...
    last = model.get_weights()
    assert selector.best_weights is None  # ... and nothing kept or restored.
    np.testing.assert_array_equal(last[0], model.get_weights()[0])


def test_a_nan_loss_stops_the_job_and_names_it(tmp_path, registered):
    config = _config()
    config.optimizer.learning_rate = 1e30  # Diverges within an epoch.
    config.training.epochs = 3
    with pytest.raises(selection.NaNLossError, match=r"erm on lodo_hospital_0/r0/erm.*epoch 1"):
        runner.run(TOY, config, str(tmp_path / "nan"))


def test_a_sweep_without_keras_tuner_says_how_to_install_it(monkeypatch, tmp_path):
    from tfcell.experiments import script

    config = _config()
    config.sweep = {"enabled": True}

    def no_data(*args, **kwargs):
        raise AssertionError("data was read before the keras-tuner check")

    monkeypatch.setitem(sys.modules, "keras_tuner", None)  # `import keras_tuner` fails.
    monkeypatch.setattr(protocol, "load_protocol", no_data)
    with pytest.raises(SystemExit, match=r'pip install "tfcell\[tuner\]"'):
        script.run_script(config, str(tmp_path))


def test_a_trainer_with_callbacks_on_a_domain_matrix_evaluates_every_domain():
    """BoDA (a trainer whose callback refreshes its centroids) trained on one
    hospital of a train-on-one / test-on-every-domain setting."""
    from tfcell.training import strategy as strategy_lib

    config = _config()
    records = synthetic.white_cells(
        150, image_size=16, num_classes=3, domains=3, subjects_per_domain=4, seed=0
    )
    setting = settings.domain_matrix(records, 0.2, 0.3, 0)[0]
    own = {p: set(setting.table(p)["subject"]) for p in ("train", "val", "test:hospital_0")}
    assert not own["train"] & own["test:hospital_0"] and not own["train"] & own["val"]
    refreshed = []

    def make_callbacks(model, data, hp):
        callback = training.BoDACentroidRefresh(data.train_dataset(), every=1)
        original = model.refresh_centroids

        def counting(dataset):
            refreshed.append(1)
            return original(dataset)

        model.refresh_centroids = counting
        return [callback]

    boda = methods.TrainerMethod(
        "BoDA",
        lambda f, c, info, hp: training.BoDATrainer(
            f, c, counts=np.asarray(info.domain_class_counts), start_step=0
        ),
        make_callbacks,
    )
    data = TOY.task.prepare(setting, config)
    job = tasks.Job(
        key=f"{setting.name}/r0/boda", name="boda", method=boda, hp={}, data=data,
        config=config, seed=0, strategy=strategy_lib.get_strategy(), verbose=0,
    )  # fmt: skip
    result = tasks.ClassificationTask().run_job(job)
    assert refreshed, "the method's callback never ran"
    assert sorted(r["test_set"] for r in result.records) == [
        "test:hospital_0", "test:hospital_1", "test:hospital_2",
    ]  # fmt: skip
    for r in result.records:
        assert np.isfinite(r["f1"]) and r["num_test"] == setting.size(r["test_set"])
    assert set(result.outputs) >= {"test:hospital_1_probabilities", "val_scores"}


def test_balanced_samplers_fill_every_batch_with_every_group():
    records = _records(90, domains=3)
    setting = settings.leave_one_domain_out(records, 0.2, 0)[0]  # 2 source domains.
    data = tasks.SettingData(setting, 8)
    maps = data.id_maps["domain"]
    sources = {maps[d] for d in set(setting.table("train")["domain"])}
    train = data.dataset("train", 12, "dict", training=True, sampler="domain_balanced")
    batches = list(train)
    assert len(batches) == train.steps_per_epoch
    for batch in batches:
        counts = np.bincount(batch["domain"].numpy(), minlength=3)
        assert {i for i in range(3) if counts[i]} == sources
        assert all(counts[i] == 6 for i in sources)  # 12 // 2 domains each.
    explicit = data.dataset("train", 12, "dict", training=True, sampler="domain_balanced",
                            per_group=4)  # fmt: skip
    assert next(iter(explicit))["image"].shape[0] == 8
    by_class = data.dataset("train", 9, "tuple", training=True, sampler="class_balanced")
    _, labels = next(iter(by_class))
    assert np.bincount(labels.numpy(), minlength=3).tolist() == [3, 3, 3]
    # Inference parts never resample.
    assert sum(len(y) for _, y in data.dataset("val", 12)) == setting.size("val")
    with pytest.raises(ValueError, match="sampler"):
        data.dataset("train", 12, training=True, sampler="by_subject")
