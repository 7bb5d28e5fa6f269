"""HeterogeneityTrainer(center_learning_rate=): the centres' own SGD step."""

import keras
import numpy as np
import tensorflow as tf

from tfcell.testing import test_case

from .heterogeneity_test import SUBJECT_LABELS, make_batch, make_trainer


class CenterLearningRateTest(test_case.TestCase):
    """`center_learning_rate`: the centres' own SGD step on the gradient divided by
    the weight of the term that pulls them (the PyTorch centre-loss practice)."""

    def test_class_centres_move_half_way_to_their_batch_means(self):
        # Only the class term acts on the class centres (Eq. 3, a mean per class):
        # grad / lambda_class = -2 (mean_c x - c), so a rate of 0.25 moves each
        # present class centre half-way to its batch mean, whatever lambda_class is.
        trainer = make_trainer(lambda_class=0.05, center_learning_rate=0.25)
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))  # The network stays put.
        batch = make_batch()
        feats = trainer.featurizer.predict(batch["image"], verbose=0)
        before = keras.ops.convert_to_numpy(trainer.class_centers.centers).copy()
        trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        after = keras.ops.convert_to_numpy(trainer.class_centers.centers)
        for c in range(2):
            mean = feats[batch["label"] == c].mean(axis=0)
            self.assertAllClose(after[c], (before[c] + mean) / 2, atol=1e-5)

    def test_subject_centres_follow_eqs_4_and_5_and_ablations_leave_centres_alone(self):
        batch = make_batch()
        trainer = make_trainer(center_learning_rate=0.1)
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        centers = trainer.subject_centers.centers
        c = keras.ops.convert_to_numpy(centers).astype("float64").copy()
        feats = trainer.featurizer.predict(batch["image"], verbose=0).astype("float64")
        # Reference: gradient of Eq. 4 + (l3 / l2) * Eq. 5 with respect to the centres.
        grad = np.zeros_like(c)
        for s in range(4):
            x = feats[batch["subject"] == s]
            grad[s] += -2 * (x - c[s]).mean(axis=0)
        for i in range(4):
            for j in range(4):
                if i == j:
                    continue
                d = c[i] - c[j]
                d2 = d @ d
                if SUBJECT_LABELS[i] == SUBJECT_LABELS[j]:
                    g = 2 * d
                else:
                    g = -2 * d / (1 + d2) ** 2
                grad[i] += 0.1 * g  # l3 / l2 = 0.005 / 0.05; pairs are ordered.
                grad[j] -= 0.1 * g
        trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        self.assertAllClose(keras.ops.convert_to_numpy(centers), c - 0.1 * grad, atol=1e-4)

        ce_only = make_trainer(
            lambda_class=0.0, lambda_subject=0.0, lambda_subject_class=0.0,
            center_learning_rate=0.25,
        )  # fmt: skip
        ce_only.compile(optimizer=keras.optimizers.Adam(1e-2))
        start = [keras.ops.convert_to_numpy(v).copy() for v in ce_only._center_variables()]
        ce_only.fit(tf.data.Dataset.from_tensors(batch).repeat(3), epochs=1, verbose=0)
        for a, b in zip(start, ce_only._center_variables()):
            self.assertAllClose(a, keras.ops.convert_to_numpy(b))

    def test_saving_and_errors(self):
        trainer = make_trainer(center_learning_rate=0.25)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        trainer.fit(tf.data.Dataset.from_tensors(make_batch()), epochs=1, verbose=0)
        revived = self.run_model_saving_test(trainer, make_batch()["image"])
        self.assertEqual(revived.center_learning_rate, 0.25)
        with self.assertRaisesRegex(ValueError, "center_learning_rate"):
            make_trainer(center_learning_rate=0.0)

    def test_mirrored_equals_single_device(self):
        half = make_batch(4, seed=1)
        batch = {k: np.concatenate([v, v]) for k, v in half.items()}

        def run(strategy):
            keras.utils.set_random_seed(7)
            with strategy.scope():
                trainer = make_trainer(center_learning_rate=0.25)
                trainer.compile(optimizer=keras.optimizers.SGD(0.5))
            trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
            return [w.numpy() for w in trainer.trainable_weights]

        single = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
        mirrored = run(test_case.two_cpu_strategy())
        for a, b in zip(mirrored, single):
            self.assertAllClose(a, b, atol=1e-5)
