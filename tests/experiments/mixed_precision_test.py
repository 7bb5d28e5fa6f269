"""The GPU path on CPU: a harness run under `config.mixed_precision=True`
(finite losses, the policy recorded and restored), the trainers' loss scaling
under mixed_float16, float32 heads, `config.training.jit_compile` passed to
`compile`, and `config.training.augment_in_model` (the augmentation in the
network, active in training only, saved and reloaded)."""

import json
import os
import sys
import types

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

import tfcell
from tfcell import training
from tfcell.data import augmentation, model_augmentation, synthetic
from tfcell.experiments import methods, protocol, runner, settings, tasks


class SpyData(tasks.SettingData):
    """Records the augmentation the training batches were asked for."""

    augments = []

    def dataset(self, part, batch_size, output="tuple", training=False, seed=0, augment=None,
                sampler=None, per_group=None):  # fmt: skip
        if training:
            SpyData.augments.append(augment)
        return super().dataset(
            part, batch_size, output, training, seed, augment, sampler, per_group
        )


class SpyTask(tasks.ClassificationTask):
    """Keeps every job's trained model (the runner drops it after saving)."""

    def __init__(self):
        self.models = {}

    def prepare(self, setting, config, cache_dir=None):
        return SpyData(setting, config.data.image_size, cache_dir)

    def run_job(self, job):
        result = super().run_job(job)
        self.models[job.name] = result.model
        return result


def _coral(featurizer, classifier, info, hp):
    return training.CORALTrainer(featurizer, classifier, num_domains=info.num_domains)


class GpuPaper(protocol.Protocol):
    """One holdout setting of synthetic white cells; a loss head and a trainer."""

    def __init__(self):
        super().__init__()
        self.task = SpyTask()

    def settings(self, config, repeat):
        records = synthetic.white_cells(
            config.data.num_images, image_size=config.data.image_size, num_classes=3,
            domains=2, subjects_per_domain=2, seed=config.seed,
        )  # fmt: skip
        return [settings.holdout("holdout", records, 0.25, 0.25, config.seed, synthetic=True)]

    def methods(self, config):
        ce = methods.LossMethod(
            "CE", "softmax", lambda hp, w: keras.losses.SparseCategoricalCrossentropy(True)
        )
        every = {"ce": ce, "coral": methods.TrainerMethod("CORAL", _coral)}
        return {n: every[n] for n in config.methods}

    def augmentation(self, config, seed):
        if not config.training.augment:
            return None
        return augmentation.PerImageAugmentation(flips=True, rotation=180.0, brightness=0.2)

    def write_report(self, workdir_path, config, records, run_info):
        path = os.path.join(workdir_path, "report.md")
        with open(path, "w") as f:
            f.write(f"{len(records)} records\n")
        return path


GPU_PAPER = GpuPaper()


@pytest.fixture
def paper():
    module = types.ModuleType("tfcell_gpu_paper")
    module.GPU_PAPER = GPU_PAPER
    sys.modules["tfcell_gpu_paper"] = module
    GPU_PAPER.task.models.clear()
    SpyData.augments.clear()
    yield GPU_PAPER
    keras.mixed_precision.set_global_policy("float32")


def _config(**training):
    config = ml_collections.ConfigDict()
    config.protocol = "tfcell_gpu_paper:GPU_PAPER"
    config.seed = 0
    config.num_repeats = 1
    config.save_model_repeats = -1
    config.methods = ("ce", "coral")
    config.mixed_precision = False
    config.data = {"num_images": 64, "image_size": 16}
    config.model = {"backbone": "small_cnn", "widths": (4,), "embedding_dim": 8}
    config.optimizer = {"name": "adam", "learning_rate": 1e-3}
    config.training = {
        "batch_size": 16, "epochs": 1, "patience": 5, "selection": "val_accuracy",
        "verbose": 0, "tensorboard": False, "steps_per_epoch": 0, "precise_bn": False,
        "augment": False, "augment_in_model": False,
        "jit_compile": ml_collections.FieldReference(False, field_type=object),
    }  # fmt: skip
    config.training.update(training)
    return config


def _records(workdir):
    with open(os.path.join(workdir, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_mixed_precision_run_finishes_with_finite_losses_and_restores_policy(paper, tmp_path):
    config = _config()
    config.mixed_precision = True
    workdir = str(tmp_path / "run")
    runner.run(paper, config, workdir)

    assert keras.mixed_precision.global_policy().name == "float32"  # Restored.
    with open(os.path.join(workdir, "run.json")) as f:
        assert json.load(f)["dtype_policy"] == "mixed_float16"
    records = _records(workdir)
    assert {r["method"] for r in records} == {"ce", "coral"}
    for record in records:
        for name, values in record["train_history"].items():
            assert np.all(np.isfinite(values)), (record["method"], name, values)
    for name, model in paper.task.models.items():
        assert model.dtype_policy.name == "mixed_float16", name
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer), name
        assert (
            keras.backend.standardize_dtype(
                model.outputs[0].dtype if name == "ce" else model.classifier.outputs[0].dtype
            )
            == "float32"
        )


def test_policy_restored_when_a_job_fails(paper, tmp_path):
    config = _config()
    config.mixed_precision = True
    config.optimizer.name = "rmsprop"  # make_optimizer refuses it inside the job.
    with pytest.raises(ValueError, match="optimizer"):
        runner.run(paper, config, str(tmp_path / "run"))
    assert keras.mixed_precision.global_policy().name == "float32"


def test_mixed_precision_must_be_a_bool(paper, tmp_path):
    config = ml_collections.ConfigDict({**_config().to_dict(), "mixed_precision": "yes"})
    with pytest.raises(ValueError, match="mixed_precision must be True or False"):
        runner.run(paper, config, str(tmp_path / "run"))


def _networks(info, config):
    featurizer = methods.make_backbone(config.model, info.image_shape)
    classifier = keras.Sequential(
        [keras.Input(featurizer.output_shape[1:]), keras.layers.Dense(info.num_classes)]
    )
    return featurizer, classifier


def _batch(n=12, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(0, 255, (n, size, size, 3)).astype("float32"),
        "label": np.arange(n) % 3,
        "domain": (np.arange(n) // 2) % 2,
    }


def _boda(featurizer, classifier, info, hp):
    return training.BoDATrainer(featurizer, classifier, counts=[[4, 4, 4], [4, 4, 4]], start_step=0)


@pytest.mark.parametrize("make", [_coral, _boda], ids=["coral", "boda"])
def test_trainer_step_under_mixed_float16_unscales_gradients(make):
    """One SGD step: LossScaleOptimizer (initial scale 2**15) gives the float32
    step (to float16 accuracy), so the loss was unscaled before the update."""
    info = methods.DataInfo(3, (8, 8, 8), (16, 16, 3), num_domains=2)
    config = ml_collections.ConfigDict(
        {"model": {"backbone": "small_cnn", "widths": (4,), "embedding_dim": 8}}
    )
    batch = _batch()
    steps = {}
    try:
        for policy in ("float32", "mixed_float16"):
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(0)
            model = methods.TrainerMethod("t", make).build(info, {}, config).model
            if policy == "mixed_float16":
                model.set_weights(steps["float32"][0])
            model.compile(optimizer=keras.optimizers.SGD(0.1))
            before = [np.array(w) for w in model.get_weights()]
            history = model.fit(
                tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False
            )
            logs = {k: v[0] for k, v in history.history.items()}
            after = model.get_weights()
            steps[policy] = (before, after, logs, model)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    before, after, logs, model = steps["mixed_float16"]
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(np.isfinite(float(v)) for v in logs.values()), logs
    ref_before, ref_after, ref_logs, _ = steps["float32"]
    np.testing.assert_allclose(logs["loss"], ref_logs["loss"], rtol=2e-2)
    for b, a, rb, ra in zip(before, after, ref_before, ref_after):
        delta, ref = np.asarray(a, "float64") - b, np.asarray(ra, "float64") - rb
        if np.abs(ref).max() > 1e-4:
            np.testing.assert_allclose(np.linalg.norm(delta), np.linalg.norm(ref), rtol=0.1)


@pytest.mark.parametrize(
    "head, kwargs", [("softmax", {}), ("affinity", {"sigma": 130.0}), ("cosine", {})]
)
def test_loss_facing_outputs_are_float32_under_mixed_float16(head, kwargs):
    info = methods.DataInfo(3, (8, 8, 8), (16, 16, 3), num_domains=2)
    config = ml_collections.ConfigDict(
        {"model": {"backbone": "small_cnn", "widths": (4,), "embedding_dim": 8}}
    )
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        backbone = methods.make_backbone(config.model, info.image_shape)
        model = tfcell.models.build_classifier(backbone, 3, head=head, embedding_dim=8, **kwargs)
        trainer = methods.TrainerMethod("t", _coral).build(info, {}, config).model
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("embedding").compute_dtype == "float16"  # The network: float16.
    scores = model(_batch()["image"])
    assert keras.backend.standardize_dtype(scores.dtype) == "float32"
    logits = trainer(_batch()["image"])
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_jit_compile_is_passed_to_compile(paper, tmp_path):
    config = _config(jit_compile=True)
    config.methods = ("ce",)  # XLA compiles on CPU too, in seconds per model.
    runner.run(paper, config, str(tmp_path / "run"))
    assert paper.task.models["ce"].jit_compile is True
    with open(tmp_path / "run" / "run.json") as f:
        assert json.load(f)["jit_compile"] is True


def test_jit_compile_defaults_to_false(paper, tmp_path):
    config = _config()
    del config.training["jit_compile"]  # An older config without the key.
    config.methods = ("coral",)
    runner.run(paper, config, str(tmp_path / "run"))
    assert paper.task.models["coral"].jit_compile is False


def test_jit_compile_value_is_checked(paper, tmp_path):
    with pytest.raises(ValueError, match="jit_compile must be False, True or 'auto'"):
        runner.run(paper, _config(jit_compile="xla"), str(tmp_path / "run"))


def test_task_options_refused_by_a_task_that_does_not_read_them(paper, tmp_path):
    class OtherTask:
        def prepare(self, setting, config, cache_dir=None):
            raise AssertionError("not reached")

    other = GpuPaper()
    other.task = OtherTask()
    with pytest.raises(ValueError, match="augment_in_model=True.*OtherTask"):
        runner.run(other, _config(augment=True, augment_in_model=True), str(tmp_path / "run"))


def test_augment_in_model(paper, tmp_path):
    workdir = str(tmp_path / "run")
    runner.run(paper, _config(augment=True, augment_in_model=True), workdir)

    assert SpyData.augments and all(a is None for a in SpyData.augments)  # Not in tf.data.
    with open(os.path.join(workdir, "run.json")) as f:
        assert json.load(f)["augment_in_model"] is True
    x = _batch(4)["image"]
    for name, model in paper.task.models.items():
        network = model if name == "ce" else model.featurizer
        layer = network.get_layer("training_augmentation")
        assert isinstance(layer, model_augmentation.TrainingAugmentation)
        assert np.abs(np.asarray(layer(x, training=True)) - x).max() > 1.0
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
        np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
        path = os.path.join(workdir, "jobs", "holdout", "r0", name, "model.keras")
        reloaded = keras.saving.load_model(path)
        np.testing.assert_allclose(
            reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
        )


def test_augment_in_model_with_xla_and_a_rotation_is_refused(paper, tmp_path):
    config = _config(augment=True, augment_in_model=True, jit_compile=True)
    with pytest.raises(ValueError, match="no XLA kernel"):
        runner.run(paper, config, str(tmp_path / "run"))


def test_augmentation_without_a_layer_equivalent_is_refused():
    with pytest.raises(ValueError, match="no in-model equivalent"):
        model_augmentation.in_model_augmentation(lambda images, seed: images, seed=0)


@pytest.mark.parametrize(
    "augment",
    [augmentation.RandomDihedral(), augmentation.PerImageAugmentation(hue=0.1, grayscale=0.5)],
    ids=["dihedral", "per_image"],
)
def test_training_augmentation_config_round_trip(augment):
    layer = model_augmentation.TrainingAugmentation(augment, seed=3)
    clone = model_augmentation.TrainingAugmentation.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.supports_jit == isinstance(augment, augmentation.RandomDihedral)


def test_a_sweep_runs_its_trials_under_the_policy_and_restores_it(monkeypatch, tmp_path):
    import keras

    from tfcell.experiments import sweep

    seen = []
    monkeypatch.setattr(sweep, "require_keras_tuner", lambda: None)
    monkeypatch.setattr(
        sweep, "_run_sweep",
        lambda *args: seen.append(keras.mixed_precision.global_policy().name) or {"ce": {}},
    )  # fmt: skip
    config = ml_collections.ConfigDict({"mixed_precision": True})
    assert sweep.run_sweep(None, config, str(tmp_path)) == {"ce": {}}
    assert seen == ["mixed_float16"]
    assert keras.mixed_precision.global_policy().name == "float32"
