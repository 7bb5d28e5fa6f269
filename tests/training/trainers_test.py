"""Every trainer: build on a tiny featurizer, fit one step, save/load, predict.

Plus the DANN schedule and the BoDA centroid refresh against NumPy.
"""

import json

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import tfcell
from tfcell import testing, training


def _models(feature_dim=3, num_classes=2):
    featurizer = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(feature_dim)],
        name="featurizer",
    )
    classifier = keras.Sequential(
        [keras.Input((feature_dim,)), keras.layers.Dense(num_classes)], name="classifier"
    )
    return featurizer, classifier


def _plain(config):
    return json.loads(json.dumps(config))


def _data(n=8):
    rng = np.random.RandomState(0)
    return {
        "image": rng.rand(n, 4, 4, 1).astype("float32"),
        "label": np.array([0, 1] * (n // 2), "int32"),
        "domain": np.array([0, 0, 1, 1, 2, 2, 0, 1][:n], "int32"),
        "subject": np.zeros(n, "int32"),
    }


def _dataset(data, batch=8):
    return tf.data.Dataset.from_tensor_slices(data).batch(batch)


COUNTS = training.domain_class_counts(_data()["domain"], _data()["label"], 3, 2)

MAKERS = {
    "erm": lambda f, c: training.ERMTrainer(f, c),
    "coral": lambda f, c: training.CORALTrainer(f, c, num_domains=3),
    "mmd": lambda f, c: training.MMDTrainer(f, c, num_domains=3, penalty_weight=0.5),
    "dann": lambda f, c: training.DANNTrainer(
        f, c, num_domains=3, discriminator_width=4, total_steps=10
    ),
    "boda": lambda f, c: training.BoDATrainer(f, c, counts=COUNTS, start_step=0),
}


class TrainersTest(testing.TestCase):
    @parameterized.named_parameters(*[(name, name) for name in MAKERS])
    def test_fit_one_step_save_and_load(self, name):
        trainer = MAKERS[name](*_models())
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))
        before = [np.array(w) for w in trainer.trainable_weights]
        dataset = _dataset(_data())
        history = trainer.fit(dataset, epochs=1, verbose=0)
        for key in ("loss", "ce", "accuracy", *trainer.penalty_names):
            self.assertIn(key, history.history)
            self.assertAllFinite(history.history[key])
        changed = [not np.allclose(a, b) for a, b in zip(before, trainer.trainable_weights)]
        self.assertTrue(all(changed), f"{name}: some weights did not move: {changed}")

        scores = trainer.predict(dataset, verbose=0)
        self.assertEqual(scores.shape, (8, 2))
        self.assertAllClose(trainer.predict(_data()["image"], verbose=0), scores, op="reduction")
        revived = self.run_model_saving_test(trainer, _data()["image"])
        self.assertIsInstance(revived, type(trainer))
        self.assertEqual(_plain(revived.get_config()), _plain(trainer.get_config()))
        evaluation = trainer.evaluate(dataset, verbose=0, return_dict=True)
        self.assertAllFinite(evaluation["loss"])

    @parameterized.named_parameters(*[(name, name) for name in MAKERS])
    def test_config_round_trip(self, name):
        self.run_serialization_test(MAKERS[name](*_models()))

    def test_tuple_batches_and_unpack(self):
        trainer = training.ERMTrainer(*_models())
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))
        data = _data()
        trainer.fit(data["image"], data["label"], batch_size=4, epochs=1, verbose=0)
        batch = training.unpack_batch({"image": data["image"], "label": data["label"][:, None]})
        self.assertEqual(tuple(batch["label"].shape), (8,))
        self.assertAllClose(batch["domain"], np.zeros(8))
        with self.assertRaisesRegex(ValueError, "missing"):
            training.unpack_batch({"image": data["image"]})

    def test_ce_trainer_loss_matches_manual(self):
        # ERM: the reported loss of the first step is the mean CE at init.
        trainer = training.ERMTrainer(*_models())
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        data = _data()
        logits = trainer(data["image"])
        expected = np.mean(
            keras.losses.sparse_categorical_crossentropy(data["label"], logits, from_logits=True)
        )
        history = trainer.fit(_dataset(data), epochs=1, verbose=0)
        self.assertAllClose(history.history["loss"][0], expected, atol=1e-5, rtol=1e-5)

    def test_class_weights_scale_each_sample_ce(self):
        data = _data()
        ce = None
        for weights, factor in (
            (None, np.ones(8)),
            ([2.0, 0.0], np.where(data["label"] == 0, 2.0, 0.0)),  # Per class.
            # Per (domain, class): domain 2's class-1 samples weigh 3, the rest 1.
            ([[1.0, 1.0], [1.0, 1.0], [1.0, 3.0]], np.where(
                (data["domain"] == 2) & (data["label"] == 1), 3.0, 1.0)),
        ):  # fmt: skip
            keras.utils.set_random_seed(0)
            trainer = training.BoDATrainer(
                *_models(), counts=COUNTS, macro_weight=0.0, boda_weight=0.0,
                class_weights=weights,
            )  # fmt: skip
            trainer.compile(optimizer=keras.optimizers.SGD(0.0))
            logits = trainer(data["image"])
            ce = keras.losses.sparse_categorical_crossentropy(
                data["label"], logits, from_logits=True
            )
            history = trainer.fit(_dataset(data), epochs=1, verbose=0)
            self.assertAllClose(history.history["ce"][0], np.mean(ce * factor), atol=1e-5)
            again = training.BoDATrainer.from_config(_plain(trainer.get_config()))
            self.assertEqual(again.class_weights, None if weights is None else
                             np.asarray(weights, "float64").tolist())  # fmt: skip
        with self.assertRaisesRegex(ValueError, "finite and >= 0"):
            training.ERMTrainer(*_models(), class_weights=[1.0, -1.0])
        with self.assertRaisesRegex(ValueError, "table"):
            training.ERMTrainer(*_models(), class_weights=[[[1.0]]])

    def test_coral_penalty_matches_loss_function(self):
        trainer = training.CORALTrainer(*_models(), num_domains=3)
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        data = _data()
        features = trainer.featurizer(data["image"])
        expected = tfcell.losses.pairwise_domain_penalty(
            features, data["domain"], 3, tfcell.losses.coral, min_samples=2
        )
        history = trainer.fit(_dataset(data), epochs=1, verbose=0)
        self.assertAllClose(history.history["penalty"][0], expected, atol=1e-5, rtol=1e-5)

    def test_dann_ganin_schedule(self):
        self.assertAllClose(training.ganin_lambda(0.0), 0.0)
        self.assertAllClose(training.ganin_lambda(0.5), 2.0 / (1.0 + np.exp(-5.0)) - 1.0)
        self.assertAllClose(training.ganin_lambda(2.0), training.ganin_lambda(1.0))
        trainer = training.DANNTrainer(
            *_models(), num_domains=3, total_steps=10, reversal_factor=2.0
        )
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))
        trainer.fit(_dataset(_data(), batch=2), epochs=1, verbose=0)  # 4 steps
        # The factor of the last step (step 3, p = 0.3).
        expected = 2.0 * (2.0 / (1.0 + np.exp(-3.0)) - 1.0)
        self.assertAllClose(trainer.reversal.factor_variable, expected)
        constant = training.DANNTrainer(
            *_models(), num_domains=3, lambda_schedule="constant", reversal_factor=0.7
        )
        constant.compile(optimizer=keras.optimizers.SGD(0.1))
        constant.fit(_dataset(_data()), epochs=1, verbose=0)
        self.assertAllClose(constant.reversal.factor_variable, 0.7)

    def test_dann_discriminator_shape_and_validation(self):
        trainer = training.DANNTrainer(*_models(), num_domains=3)
        dense = [x for x in trainer.discriminator.layers if isinstance(x, keras.layers.Dense)]
        self.assertEqual([x.units for x in dense], [256, 256, 3])
        with self.assertRaisesRegex(ValueError, "lambda_schedule"):
            training.DANNTrainer(*_models(), num_domains=3, lambda_schedule="linear")
        with self.assertRaisesRegex(ValueError, "num_domains"):
            training.DANNTrainer(*_models(), num_domains=1)


class BoDACentroidsTest(testing.TestCase):
    def _np_centroids(self, trainer, data):
        feats = np.asarray(trainer.featurizer(data["image"], training=False), "float64")
        rows = []
        for d, c in zip(trainer.centroid_domains, trainer.centroid_labels):
            rows.append(feats[(data["domain"] == d) & (data["label"] == c)].mean(0))
        return np.stack(rows)

    def test_counts_and_centroid_table(self):
        counts = training.domain_class_counts([0, 0, 1, 2, 2], [0, 1, 1, 0, 0], 3, 2)
        self.assertEqual(counts.tolist(), [[1, 1], [0, 1], [2, 0]])
        trainer = training.BoDATrainer(*_models(), counts=counts)
        self.assertEqual(trainer.centroid_domains.tolist(), [0, 0, 1, 2])
        self.assertEqual(trainer.centroid_labels.tolist(), [0, 1, 1, 0])
        self.assertEqual(tuple(trainer.centroids.shape), (4, 3))

    def test_refresh_replaces_then_blends(self):
        data = _data()
        trainer = training.BoDATrainer(*_models(), counts=COUNTS)
        dataset = _dataset(data, batch=3)  # several batches in the pass
        first = self._np_centroids(trainer, data)
        trainer.refresh_centroids(dataset)
        self.assertAllClose(trainer.centroids, first, op="reduction")  # replaced

        kernel = trainer.featurizer.layers[-1].kernel
        kernel.assign(kernel * 2.0 + 0.1)
        second = self._np_centroids(trainer, data)
        trainer.refresh_centroids(dataset)
        self.assertAllClose(trainer.centroids, 0.8 * second + 0.2 * first, op="reduction")

    def test_callback_refreshes_every_n_steps(self):
        data = _data()
        trainer = training.BoDATrainer(*_models(), counts=COUNTS, start_step=2)
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))
        refreshed_at = []
        original = trainer.refresh_centroids

        def record(dataset):
            refreshed_at.append(int(trainer.optimizer.iterations.numpy()))
            expected = self._np_centroids(trainer, data)
            ready = float(trainer.centroids_ready.numpy())
            old = trainer.centroids.numpy()
            original(dataset)
            want = expected if ready == 0 else 0.8 * expected + 0.2 * old
            self.assertAllClose(trainer.centroids, want, op="reduction")

        trainer.refresh_centroids = record
        callback = training.BoDACentroidRefresh(_dataset(data), every=2)
        history = trainer.fit(_dataset(data), epochs=5, verbose=0, callbacks=[callback])
        self.assertEqual(refreshed_at, [2, 4])
        # The BoDA term starts at step 2 (one step per epoch).
        boda = history.history["boda"]
        self.assertEqual(boda[:2], [0.0, 0.0])
        self.assertTrue(all(v > 0 for v in boda[2:]), boda)

    def test_boda_term_matches_loss_function(self):
        data = _data()
        trainer = training.BoDATrainer(*_models(), counts=COUNTS, start_step=0, boda_weight=0.1)
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        trainer.refresh_centroids(_dataset(data))
        features = trainer.featurizer(data["image"], training=True)
        expected = 0.1 * tfcell.losses.boda(
            features,
            data["label"],
            data["domain"],
            trainer.centroids,
            trainer.centroid_domains,
            trainer.centroid_labels,
            COUNTS,
        )
        history = trainer.fit(_dataset(data), epochs=1, verbose=0)
        self.assertAllClose(history.history["boda"][0], expected, atol=1e-5, rtol=1e-5)
        self.assertGreater(float(expected), 0.0)

    def test_validation(self):
        with self.assertRaisesRegex(ValueError, "counts"):
            training.BoDATrainer(*_models(), counts=[1, 2])
        with self.assertRaisesRegex(ValueError, "momentum"):
            training.BoDATrainer(*_models(), counts=COUNTS, momentum=1.0)
        with self.assertRaisesRegex(ValueError, "every"):
            training.BoDACentroidRefresh(None, every=0)
