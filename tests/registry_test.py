"""Registry matrix (as DomainBed's `test/test_models.py`): every public loss and
every trainer of tfcell, on a tiny in-memory dataset, builds, compiles and fits
one step with a finite loss.

A new public `keras.losses.Loss` in `tfcell.losses` or a new trainer in
`tfcell.training` makes `test_matrix_covers_every_public_*` fail until it is
added to `LOSS_CASES` / `TRAINER_CASES` below.
"""

import inspect

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import tfcell
from tfcell import layers, losses, testing, training

NUM_CLASSES = 3
NUM_DOMAINS = 2
SUBJECT_LABELS = [0, 1, 2, 0]  # class of each of the 4 subjects
N = 8
SIZE = 16

# Public classes that are deliberately outside the matrix, with the reason.
# `Trainer` is the shared base; its concrete form is `ERMTrainer`.
NOT_IN_MATRIX = {
    "Trainer": "base class; ERMTrainer is its concrete form",
    # An autoencoder on detector features, not a classifier: it has its own
    # one-step, degenerate-batch and distribution tests (tests/training/aecfe_test.py).
    "AECFETrainer": "autoencoder on {features, image, domain}; tests/training/aecfe_test.py",
}


def _data(n=N):
    """n images of 16x16x3 in [0, 1], every class, domain and subject present."""
    rng = np.random.RandomState(0)
    subject = np.arange(n, dtype="int32") % len(SUBJECT_LABELS)
    return {
        "image": rng.rand(n, SIZE, SIZE, 3).astype("float32"),
        "label": np.asarray(SUBJECT_LABELS, "int32")[subject],
        "domain": (np.arange(n, dtype="int32") // 2) % NUM_DOMAINS,
        "subject": subject,
    }


def _counts():
    data = _data()
    return np.bincount(data["label"], minlength=NUM_CLASSES)


def _featurizer(feature_dim=8):
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(feature_dim),
        ],
        name="featurizer",
    )


def _classifier(feature_dim=8):
    return keras.Sequential(
        [keras.Input((feature_dim,)), keras.layers.Dense(NUM_CLASSES)], name="classifier"
    )


def _head_model(head):
    """image -> featurizer -> `head` (a Dense, GaussianAffinity or CosineHead)."""
    image = keras.Input((SIZE, SIZE, 3))
    return keras.Model(image, head(_featurizer()(image)))


# ----------------------------------------------------------------- losses
# Each case returns (model, loss, x, y, callbacks) ready for compile + fit.


def _classification(head, loss):
    data = _data()
    return _head_model(head), loss, data["image"], data["label"], []


def _weights():
    return losses.class_balanced_weights(_counts(), beta=0.999)


def _center_case(update_rule):
    # CenterLoss takes (gathered centres, features); written as the offset
    # `features - centres` against a zero target, it runs under plain `fit`.
    image = keras.Input((SIZE, SIZE, 3), name="image")
    label = keras.Input((), dtype="int32", name="label")
    features = _featurizer()(image)
    centers = layers.Centers(NUM_CLASSES, update_rule=update_rule)(features, label)
    offset = keras.layers.Subtract(name="offset")([features, centers])
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(features)
    model = keras.Model({"image": image, "label": label}, {"logits": logits, "offset": offset})
    loss = {
        "logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "offset": losses.CenterLoss(),
    }
    data = _data()
    x = {"image": data["image"], "label": data["label"]}
    y = {"logits": data["label"], "offset": np.zeros((N, 8), "float32")}
    return model, loss, x, y, []


def _exclusive_case():
    # Classification-shaped: label 0 marks unannotated samples.
    loss = losses.ExclusiveCrossentropyLoss(seed=0)
    model, _, x, y, _ = _classification(keras.layers.Dense(NUM_CLASSES), loss)
    return model, loss, x, y, [training.EpochVariableCallback(loss)]


def _ssim_case():
    image = keras.Input((SIZE, SIZE, 3))
    rec = keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")(image)
    data = _data()
    return keras.Model(image, rec), losses.SSIMLoss(), data["image"], data["image"], []


def _detection_case():
    # One 2 x 2 grid per 16 px image (a stride-8 conv); one object in a corner cell.
    image = keras.Input((SIZE, SIZE, 3))
    y = np.zeros((N, 2, 2, 6), "float32")
    y[:, 0, 0] = [0.5, 0.5, 0.0, 0.0, 1.0, 0.0]
    loss = losses.DetectionLoss(exclusive=True, seed=0)
    model = keras.Model(image, keras.layers.Conv2D(5, 8, strides=8)(image))
    return model, loss, _data()["image"], y, [training.EpochVariableCallback(loss)]


LOSS_CASES = {
    "ClassBalancedCrossentropyLoss": lambda: _classification(
        keras.layers.Dense(NUM_CLASSES),
        losses.ClassBalancedCrossentropyLoss(_weights(), from_logits=True),
    ),
    "ClassBalancedFocalLoss_softmax": lambda: _classification(
        keras.layers.Dense(NUM_CLASSES),
        losses.ClassBalancedFocalLoss(2.0, _weights(), from_logits=True, variant="softmax"),
    ),
    "ClassBalancedFocalLoss_sigmoid": lambda: _classification(
        keras.layers.Dense(NUM_CLASSES),
        losses.ClassBalancedFocalLoss(2.0, _weights(), from_logits=True, variant="sigmoid"),
    ),
    "AffinityLoss": lambda: _classification(
        layers.GaussianAffinity(NUM_CLASSES, sigma=10.0, num_centers=2),
        losses.AffinityLoss(margin=0.1),
    ),
    "CFALoss": lambda: _classification(
        layers.GaussianAffinity(NUM_CLASSES, sigma=10.0, num_centers=2),
        losses.CFALoss(margin=0.1, gamma=2.0, class_weights=_weights()),
    ),
    "ArcFaceLoss": lambda: _classification(
        layers.CosineHead(NUM_CLASSES), losses.ArcFaceLoss(0.5, 30.0, _weights())
    ),
    "CosFaceLoss": lambda: _classification(
        layers.CosineHead(NUM_CLASSES), losses.CosFaceLoss(0.35, 20.0, _weights())
    ),
    "SphereFaceLoss_scale": lambda: _classification(
        layers.CosineHead(NUM_CLASSES), losses.SphereFaceLoss(0.35, 30.0, _weights())
    ),
    "SphereFaceLoss_norms": lambda: _classification(
        layers.CosineHead(NUM_CLASSES, return_norms=True),
        losses.SphereFaceLoss(margin=4.0, scale=None),
    ),
    "CenterLoss_gradient": lambda: _center_case("gradient"),
    "CenterLoss_wen": lambda: _center_case("wen"),
    "ExclusiveCrossentropyLoss": _exclusive_case,
    "SSIMLoss": _ssim_case,
    "DetectionLoss": _detection_case,
}

# ---------------------------------------------------------------- trainers


def _boda():
    data = _data()
    counts = training.domain_class_counts(data["domain"], data["label"], NUM_DOMAINS, NUM_CLASSES)
    return training.BoDATrainer(_featurizer(), _classifier(), counts=counts, start_step=0)


TRAINER_CASES = {
    "ERMTrainer": lambda: training.ERMTrainer(_featurizer(), _classifier()),
    "DANNTrainer": lambda: training.DANNTrainer(
        _featurizer(), _classifier(), num_domains=NUM_DOMAINS, discriminator_width=8
    ),
    "CORALTrainer": lambda: training.CORALTrainer(
        _featurizer(), _classifier(), num_domains=NUM_DOMAINS
    ),
    "MMDTrainer": lambda: training.MMDTrainer(
        _featurizer(), _classifier(), num_domains=NUM_DOMAINS
    ),
    "BoDATrainer": _boda,
    "HeterogeneityTrainer": lambda: training.HeterogeneityTrainer(
        _featurizer(), _classifier(), num_classes=NUM_CLASSES, subject_labels=SUBJECT_LABELS
    ),
    "HeterogeneityTrainer_center_optimizer": lambda: training.HeterogeneityTrainer(
        _featurizer(),
        _classifier(),
        num_classes=NUM_CLASSES,
        subject_labels=SUBJECT_LABELS,
        center_learning_rate=0.25,
    ),  # fmt: skip
}


def _public_classes(module, base):
    """Public classes of a tfcell package namespace that subclass `base`."""
    found = {}
    for name in dir(module):
        obj = getattr(module, name)
        if (
            not name.startswith("_")
            and inspect.isclass(obj)
            and issubclass(obj, base)
            and obj.__module__.startswith("tfcell.")
        ):
            found[name] = obj
    return found


def _case_class(case_name):
    return case_name.split("_")[0]


class RegistryMatrixTest(testing.TestCase):
    @parameterized.named_parameters(*[(name, name) for name in LOSS_CASES])
    def test_loss_fits_one_step(self, name):
        model, loss, x, y, callbacks = LOSS_CASES[name]()
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
        history = model.fit(x, y, batch_size=N, epochs=1, verbose=0, callbacks=callbacks)
        self.assertLen(history.history["loss"], 1)
        self.assertAllFinite(history.history["loss"], f"{name}: {history.history}")
        for weight in model.weights:
            self.assertAllFinite(weight, f"{name}: {weight.path} is not finite")

    @parameterized.named_parameters(*[(name, name) for name in TRAINER_CASES])
    def test_trainer_fits_one_step(self, name):
        trainer = TRAINER_CASES[name]()
        trainer.compile(optimizer=keras.optimizers.SGD(0.01))
        dataset = tf.data.Dataset.from_tensor_slices(_data()).batch(N)
        history = trainer.fit(dataset, epochs=1, verbose=0, shuffle=False)
        self.assertLen(history.history["loss"], 1)
        self.assertAllFinite(history.history["loss"], f"{name}: {history.history}")
        self.assertEqual(trainer.predict(_data()["image"], verbose=0).shape, (N, NUM_CLASSES))

    def test_boda_trainer_with_centroid_refresh(self):
        trainer = _boda()
        trainer.compile(optimizer=keras.optimizers.SGD(0.01))
        data = _data()
        # Two steps of 4; the refresh runs before step 1 (every=1).
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(N // 2)
        refresh = training.BoDACentroidRefresh(dataset, every=1)
        history = trainer.fit(dataset, epochs=1, verbose=0, callbacks=[refresh], shuffle=False)
        self.assertAllFinite(history.history["loss"])
        self.assertEqual(float(keras.ops.convert_to_numpy(trainer.centroids_ready)), 1.0)
        centroids = keras.ops.convert_to_numpy(trainer.centroids)
        self.assertAllFinite(centroids)
        self.assertGreater(float(np.abs(centroids).sum()), 0.0)

    def test_matrix_covers_every_public_loss(self):
        public = set(_public_classes(losses, keras.losses.Loss))
        covered = {_case_class(name) for name in LOSS_CASES}
        self.assertEqual(
            public - covered,
            set(),
            "public losses missing from LOSS_CASES in tests/registry_test.py; add them",
        )
        self.assertEqual(covered - public, set(), "LOSS_CASES names a class that is not public")

    def test_matrix_covers_every_public_trainer(self):
        public = set(_public_classes(training, keras.Model)) - set(NOT_IN_MATRIX)
        covered = {_case_class(name) for name in TRAINER_CASES}
        self.assertEqual(
            public - covered,
            set(),
            "public trainers missing from TRAINER_CASES in tests/registry_test.py; add them",
        )
        self.assertEqual(covered - public, set())

    @parameterized.named_parameters(
        ("losses", "losses", keras.losses.Loss),
        ("layers", "layers", keras.layers.Layer),
        ("training", "training", keras.Model),
    )
    def test_public_classes_are_registered(self, package, base):
        classes = _public_classes(getattr(tfcell, package), base)
        self.assertNotEmpty(classes)
        for name, cls in classes.items():
            if name in NOT_IN_MATRIX:
                continue
            registered = keras.saving.get_registered_name(cls)
            self.assertTrue(
                registered.startswith("tfcell>"),
                f"{package}.{name} is not registered (got {registered!r}); decorate it "
                '@keras.saving.register_keras_serializable(package="tfcell")',
            )
            self.assertIs(keras.saving.get_registered_object(registered), cls)
