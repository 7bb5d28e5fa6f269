"""MirroredStrategy on two logical CPUs: one `fit` step equals the single-device step.

What "equal" means for batch statistics. `MirroredStrategy` splits the global
batch of 8 into two replica batches (rows 0-3 and 4-7); each replica computes
CORAL / MMD / BoDA / the AE-CFE penalty on ITS half, and the trainers divide
those penalties by the replica count before the optimizer sums the replica
gradients. The mirrored step therefore applies

    grad(mean CE over all 8 rows) + grad(mean(penalty(rows 0-3), penalty(rows 4-7)))

which is not the gradient of the penalty on all 8 rows (a covariance over 8
rows is not the mean of two covariances over 4). The single-device reference
below computes exactly that mathematically expected update with a
GradientTape; for ERM (no batch statistic) the mirrored fit must equal a plain
single-device fit.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcell
from tfcell import testing
from tfcell.losses import alignment
from tfcell.training import erm

LEARNING_RATE = 0.1


def _cpus():
    return [d.name for d in tf.config.list_logical_devices("CPU")]


class AECFEPenaltyTrainer(erm.Trainer):
    """CE + the AE-CFE domain loss (source domain 0), applied in train_step."""

    penalty_names = ("penalty",)

    def batch_penalties(self, batch, features, logits):
        return {"penalty": alignment.aecfe_multi_domain_loss(features, batch["domain"], 2)}


def _data():
    rng = np.random.RandomState(3)
    return {
        "image": rng.normal(size=(8, 3, 3, 1)).astype("float32"),
        "label": np.array([0, 1, 0, 1, 0, 1, 0, 1], "int32"),
        "domain": np.array([0, 0, 1, 1, 0, 0, 1, 1], "int32"),
        "subject": np.zeros(8, "int32"),
    }


def _models():
    featurizer = keras.Sequential(
        [keras.Input((3, 3, 1)), keras.layers.Flatten(), keras.layers.Dense(3, activation="tanh")]
    )
    classifier = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    return featurizer, classifier


def _counts():
    return np.array([[2, 2], [2, 2]])


_MAKERS = {
    "erm": lambda f, c: tfcell.training.ERMTrainer(f, c),
    "coral": lambda f, c: tfcell.training.CORALTrainer(f, c, num_domains=2),
    "mmd": lambda f, c: tfcell.training.MMDTrainer(f, c, num_domains=2),
    "boda": lambda f, c: tfcell.training.BoDATrainer(f, c, counts=_counts(), start_step=0),
    "aecfe": lambda f, c: AECFEPenaltyTrainer(f, c),
}

_CENTROIDS = np.array(
    [[0.5, -0.2, 0.1], [-0.3, 0.4, 0.0], [0.2, 0.2, -0.5], [0.0, -0.4, 0.3]], "float32"
)


def _build(name, weights=None):
    trainer = _MAKERS[name](*_models())
    if weights is not None:
        trainer.set_weights(weights)
    if name == "boda":
        trainer.centroids.assign(_CENTROIDS)
    trainer.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    return trainer


def _reference_step(trainer, data, halves):
    """The expected update: CE over all rows + mean of the per-half penalties."""
    batch = erm.unpack_batch({k: tf.constant(v) for k, v in data.items()})
    variables = trainer.trainable_variables
    with tf.GradientTape() as tape:
        features = trainer.featurizer(batch["image"], training=True)
        logits = trainer.classifier(features, training=True)
        loss = tf.reduce_mean(trainer.per_sample_losses(batch, features, logits)["ce"])
        for rows in halves:
            part = {k: tf.gather(v, rows) for k, v in batch.items()}
            penalties = trainer.batch_penalties(
                part, tf.gather(features, rows), tf.gather(logits, rows)
            )
            loss += sum(penalties.values()) / len(halves)
    grads = tape.gradient(loss, variables)
    for var, grad in zip(variables, grads):
        var.assign(var - LEARNING_RATE * grad)


class DistributeTest(testing.TestCase):
    def setUp(self):
        super().setUp()
        if len(_cpus()) < 2:
            pytest.skip("needs the two logical CPUs that tests/conftest.py sets up")

    def _mirrored_fit(self, name, weights, data):
        strategy = testing.two_cpu_strategy()
        self.assertEqual(strategy.num_replicas_in_sync, 2)
        with strategy.scope():
            trainer = _build(name, weights)
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(8)
        trainer.fit(dataset, epochs=1, verbose=0)
        return [np.asarray(w) for w in trainer.get_weights()]

    def test_erm_mirrored_equals_single_device_fit(self):
        data = _data()
        weights = _build("erm").get_weights()
        mirrored = self._mirrored_fit("erm", weights, data)
        single = _build("erm", weights)
        single.fit(tf.data.Dataset.from_tensor_slices(data).batch(8), epochs=1, verbose=0)
        for got, want in zip(mirrored, single.get_weights()):
            self.assertAllClose(got, want, op="reduction")

    @pytest.mark.filterwarnings("ignore")
    def test_batch_statistic_trainers_match_mean_of_replica_penalties(self):
        data = _data()
        halves = [np.arange(0, 4), np.arange(4, 8)]
        for name in ("coral", "mmd", "boda", "aecfe"):
            with self.subTest(trainer=name):
                keras.utils.clear_session()
                weights = _build(name).get_weights()
                mirrored = self._mirrored_fit(name, weights, data)

                reference = _build(name, weights)
                _reference_step(reference, data, halves)
                for got, want in zip(mirrored, reference.get_weights()):
                    self.assertAllClose(got, want, op="reduction")

                # The penalty is not a no-op: the full-batch penalty gives
                # another update (so the test tells the two designs apart).
                full = _build(name, weights)
                _reference_step(full, data, [np.arange(8)])
                differs = any(
                    not np.allclose(a, b, *testing.tolerance("float32", "reduction"))
                    for a, b in zip(mirrored, full.get_weights())
                )
                self.assertTrue(differs, f"{name}: the penalty had no effect")
