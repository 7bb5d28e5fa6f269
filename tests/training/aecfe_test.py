"""AECFETrainer: the logged terms against a NumPy reference of Eq. 2.20, a few
steps lower the loss, degenerate batches stay finite, `.keras` round trip, and
one MirroredStrategy step on two logical CPUs."""

import json
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tfcell import losses, testing
from tfcell.models import aecfe
from tfcell.training import aecfe as aecfe_training

FEATURES = 16
LATENT = 8
SIZE = 16
BETA = 5.0


def _data(domains=(0, 0, 1, 1, 2, 2, 0, 1), seed=0):
    rng = np.random.RandomState(seed)
    n = len(domains)
    return {
        "features": rng.uniform(-1, 1, (n, FEATURES)).astype("float32"),
        "image": rng.rand(n, SIZE, SIZE, 3).astype("float32"),
        "domain": np.asarray(domains, "int32"),
    }


def _trainer(alignment="domain", beta=BETA, num_domains=3, run_eagerly=True, lr=1e-3):
    autoencoder = aecfe.aecfe_autoencoder((FEATURES,), latent_dim=LATENT, image_size=SIZE)
    trainer = aecfe_training.AECFETrainer(
        autoencoder, num_domains=num_domains, beta=beta, alignment=alignment
    )
    trainer.compile(optimizer=keras.optimizers.Adam(lr), run_eagerly=run_eagerly)
    return trainer


def _plain(config):
    return json.loads(json.dumps(config))


def _evaluate(trainer, data):
    return trainer.evaluate(data, batch_size=len(data["domain"]), verbose=0, return_dict=True)


# ------------------------------------------------------------ NumPy reference


def _moments(z):
    """Mean and unbiased covariance, divisors clamped at 1 (as the library)."""
    n = len(z)
    mean = z.sum(0) / max(n, 1) if n else np.zeros(z.shape[1])
    centred = z - mean
    return mean, centred.T @ centred / max(n - 1, 1)


def _softmax_rows(m):
    e = np.exp(m - m.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _alignment(mean_0, cov_0, z_k):
    """Eq. 2.14 for one target: MSE of the means + symmetric KL of softmaxed covs."""
    mean_k, cov_k = _moments(z_k)
    p_0, p_k = _softmax_rows(cov_0), _softmax_rows(cov_k)
    kl_0k = np.mean(p_0 * (np.log(p_0) - np.log(p_k)))
    kl_k0 = np.mean(p_k * (np.log(p_k) - np.log(p_0)))
    return np.mean((mean_k - mean_0) ** 2) + 0.5 * (kl_0k + kl_k0)


def _reference_domain_term(z, domains, alignment, num_domains=3, source=0):
    z = z.astype("float64")
    total = 0.0
    if alignment == "domain":
        if not np.any(domains == source):
            return 0.0
        mean_0, cov_0 = _moments(z[domains == source])
        targets = [k for k in range(num_domains) if k != source]
    else:  # N(0, I), every domain is a target
        mean_0, cov_0 = np.zeros(z.shape[1]), np.eye(z.shape[1])
        targets = range(num_domains)
    for k in targets:
        if np.any(domains == k):
            total += _alignment(mean_0, cov_0, z[domains == k])
    return total


def _reference_terms(trainer, data, alignment):
    out = trainer.predict(data["features"], verbose=0)
    mse = np.mean((out["features"].astype("float64") - data["features"]) ** 2)
    ssim_term = np.mean(keras.ops.convert_to_numpy(losses.ssim_loss(data["image"], out["image"])))
    if alignment == "adversarial":
        logits = trainer.discriminator.predict(out["latent"], verbose=0).astype("float64")
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        domain = -np.mean(log_p[np.arange(len(logits)), data["domain"]])
    else:
        domain = _reference_domain_term(out["latent"], data["domain"], alignment)
    return {"mse": mse, "ssim_term": ssim_term, "domain_term": domain}


class AECFETrainerTest(testing.TestCase):
    @parameterized.named_parameters(
        ("domain", "domain", BETA),
        ("normal", "normal", BETA),
        ("adversarial", "adversarial", BETA),
        ("ae_rf", "domain", 0.0),
    )
    def test_logged_terms_match_reference(self, alignment, beta):
        trainer = _trainer(alignment, beta=beta)
        data = _data()
        got = _evaluate(trainer, data)
        want = _reference_terms(trainer, data, alignment)
        for name in ("mse", "ssim_term", "domain_term"):
            self.assertAllClose(got[name], want[name], op="reduction", size=256, msg=name)
        self.assertGreater(want["domain_term"], 0.0)
        loss = want["mse"] + want["ssim_term"] + beta * want["domain_term"]
        self.assertAllClose(got["loss"], loss, op="reduction", size=256)

    @parameterized.named_parameters(
        ("domain", "domain"), ("normal", "normal"), ("aae", "adversarial")
    )
    def test_a_few_steps_reduce_the_loss(self, alignment):
        trainer = _trainer(alignment, lr=3e-3)
        data = _data()
        before = _evaluate(trainer, data)
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(8).repeat(5)
        history = trainer.fit(dataset, epochs=1, verbose=0, shuffle=False)
        for key in ("loss", "mse", "ssim_term", "domain_term"):
            self.assertAllFinite(history.history[key], key)
        after = _evaluate(trainer, data)
        reconstruction = lambda m: m["mse"] + m["ssim_term"]  # noqa: E731
        self.assertLess(reconstruction(after), reconstruction(before))
        if alignment != "adversarial":  # AAE-DA: the encoder maximises the CE
            self.assertLess(after["loss"], before["loss"])
            self.assertLess(after["domain_term"], before["domain_term"])

    @parameterized.named_parameters(
        ("domain", "domain"), ("normal", "normal"), ("adversarial", "adversarial")
    )
    def test_degenerate_batches_are_finite(self, alignment):
        trainer = _trainer(alignment)
        batches = {  # domains of the batch; True: the AE-CFE domain term is 0
            "source_only": ((0, 0, 0, 0), True),
            "targets_only": ((1, 2, 1, 2), True),
            "one_row_each": ((0, 1, 2, 2), False),
            "one_sample": ((1,), True),
        }
        for name, (domains, zero_domain_term) in batches.items():
            with self.subTest(batch=name):
                data = _data(domains)
                metrics = _evaluate(trainer, data)
                for key, value in metrics.items():
                    self.assertAllFinite(value, f"{name}: {key}")
                if alignment == "domain" and zero_domain_term:
                    self.assertEqual(metrics["domain_term"], 0.0)
                history = trainer.fit(
                    data, batch_size=len(domains), epochs=1, verbose=0, shuffle=False
                )
                self.assertAllFinite(history.history["loss"])
                for weight in trainer.weights:
                    self.assertAllFinite(weight, f"{name}: {weight.path}")

    def test_batch_without_domain_is_one_domain(self):
        trainer = _trainer("domain")
        data = _data()
        del data["domain"]
        metrics = trainer.evaluate(data, batch_size=8, verbose=0, return_dict=True)
        self.assertEqual(metrics["domain_term"], 0.0)
        with self.assertRaisesRegex(ValueError, "features"):
            trainer.evaluate({"image": data["image"]}, verbose=0)

    @parameterized.named_parameters(
        ("domain_eager", "domain", True), ("adversarial_graph", "adversarial", False)
    )
    def test_keras_round_trip_after_fit(self, alignment, run_eagerly):
        trainer = _trainer(alignment, run_eagerly=run_eagerly)
        data = _data()
        trainer.fit(data, batch_size=8, epochs=1, verbose=0, shuffle=False)
        path = os.path.join(tempfile.mkdtemp(), "trainer.keras")
        trainer.save(path)
        revived = keras.saving.load_model(path, compile=True, safe_mode=True)
        self.assertIsInstance(revived, aecfe_training.AECFETrainer)
        self.assertEqual(_plain(revived.get_config()), _plain(trainer.get_config()))
        want, got = trainer.predict(data, verbose=0), revived.predict(data, verbose=0)
        for key in ("latent", "features", "image"):
            np.testing.assert_array_equal(got[key], want[key])
        if alignment == "adversarial":
            for a, b in zip(revived.discriminator.weights, trainer.discriminator.weights):
                np.testing.assert_array_equal(a, b)
        codes = aecfe.aecfe_encode(revived, data["features"])  # the encoder alone
        self.assertAllClose(codes, want["latent"], op="reduction")

    def test_serialization(self):
        trainer = _trainer("normal", beta=2.0)
        revived = self.run_serialization_test(trainer)
        self.assertEqual(revived.alignment, "normal")
        self.assertEqual(revived.beta, 2.0)

    def test_encoder_gives_latent_codes(self):
        trainer = _trainer()
        data = _data()
        codes = aecfe.aecfe_encode(trainer, data["features"])
        self.assertEqual(codes.shape, (8, LATENT))
        self.assertIs(trainer.encoder, trainer.autoencoder.get_layer("encoder"))
        self.assertAllClose(codes, trainer.predict(data, verbose=0)["latent"])

    def test_standard_normal_points_have_exact_moments(self):
        points = aecfe_training._standard_normal_points(LATENT)  # float32
        mean, cov = _moments(points.astype("float64"))
        self.assertAllClose(mean, np.zeros(LATENT), dtype="float32")
        self.assertAllClose(cov, np.eye(LATENT), dtype="float32", op="reduction")

    def test_invalid_arguments_raise(self):
        autoencoder = aecfe.aecfe_autoencoder((FEATURES,), latent_dim=LATENT, image_size=SIZE)
        cases = [
            ({"num_domains": 0}, "num_domains"),
            ({"num_domains": 3, "source_domain": 3}, "source_domain"),
            ({"num_domains": 3, "beta": -1.0}, "beta"),
            ({"num_domains": 3, "alignment": "mmd"}, "alignment"),
            ({"num_domains": 1, "alignment": "adversarial"}, "adversarial"),
            ({"num_domains": 3, "discriminator_width": 0}, "discriminator_width"),
        ]
        for kwargs, message in cases:
            with self.subTest(kwargs=kwargs), self.assertRaisesRegex(ValueError, message):
                aecfe_training.AECFETrainer(autoencoder, **kwargs)
        with self.assertRaisesRegex(ValueError, "keras Model"):
            aecfe_training.AECFETrainer("autoencoder", num_domains=3)


# ----------------------------------------------------------- distribution

LEARNING_RATE = 0.05


def _sgd_trainer(weights=None):
    autoencoder = aecfe.aecfe_autoencoder((FEATURES,), latent_dim=LATENT, image_size=SIZE)
    trainer = aecfe_training.AECFETrainer(autoencoder, num_domains=2)
    if weights is not None:
        trainer.set_weights(weights)
    trainer.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    return trainer


def _reference_step(trainer, data, halves):
    """Reconstruction over all rows + beta * mean of the per-half domain terms."""
    batch = {k: tf.constant(v) for k, v in data.items()}
    variables = trainer.trainable_variables
    with tf.GradientTape() as tape:
        out = trainer.autoencoder(batch["features"], training=True)
        loss = tf.reduce_mean(tf.square(out["features"] - batch["features"]))
        loss += tf.reduce_mean(losses.ssim_loss(batch["image"], out["image"]))
        for rows in halves:
            latent, domains = tf.gather(out["latent"], rows), tf.gather(batch["domain"], rows)
            loss += BETA * trainer.domain_term(latent, domains) / len(halves)
    for var, grad in zip(variables, tape.gradient(loss, variables)):
        var.assign(var - LEARNING_RATE * grad)


class AECFEDistributeTest(testing.TestCase):
    def setUp(self):
        super().setUp()
        if len(tf.config.list_logical_devices("CPU")) < 2:
            pytest.skip("needs the two logical CPUs that tests/conftest.py sets up")

    @pytest.mark.filterwarnings("ignore")
    def test_mirrored_step_uses_mean_of_replica_domain_terms(self):
        data = _data(domains=(0, 0, 1, 1, 0, 0, 1, 1))
        weights = _sgd_trainer().get_weights()
        strategy = testing.two_cpu_strategy()
        with strategy.scope():
            mirrored = _sgd_trainer(weights)
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(8)
        mirrored.fit(dataset, epochs=1, verbose=0, shuffle=False)

        reference = _sgd_trainer(weights)
        _reference_step(reference, data, [np.arange(0, 4), np.arange(4, 8)])
        for got, want in zip(mirrored.get_weights(), reference.get_weights()):
            self.assertAllClose(got, want, op="reduction")

        # The domain term matters: its full-batch value gives another update.
        full = _sgd_trainer(weights)
        _reference_step(full, data, [np.arange(8)])
        differs = any(
            not np.allclose(a, b, *testing.tolerance("float32", "reduction"))
            for a, b in zip(mirrored.get_weights(), full.get_weights())
        )
        self.assertTrue(differs, "the domain term had no effect")
