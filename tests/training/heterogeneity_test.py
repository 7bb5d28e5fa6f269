import keras
import numpy as np
import tensorflow as tf

from tfcell.losses import heterogeneity
from tfcell.testing import test_case
from tfcell.training import heterogeneity as trainer_lib

SUBJECT_LABELS = [0, 0, 1, 1]


def make_trainer(**kwargs):
    inp = keras.Input((4,))
    featurizer = keras.Model(inp, keras.layers.Dense(3, name="feat")(inp))
    cin = keras.Input((3,))
    classifier = keras.Model(cin, keras.layers.Dense(2, name="head")(cin))
    return trainer_lib.HeterogeneityTrainer(
        featurizer, classifier, num_classes=2, subject_labels=SUBJECT_LABELS, **kwargs
    )


def make_batch(n=4, seed=0):
    rng = np.random.RandomState(seed)
    subject = np.array([0, 2, 1, 3, 0, 2, 1, 3][:n], "int32")
    return {
        "image": rng.rand(n, 4).astype("float32"),
        "label": np.array(SUBJECT_LABELS, "int32")[subject],
        "subject": subject,
        "domain": np.zeros(n, "int32"),
    }


def numpy_step_loss(trainer, batch):
    feats = trainer.featurizer.predict(batch["image"], verbose=0)
    logits = trainer.classifier.predict(feats, verbose=0)
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    ce = -np.mean([logp[i, batch["label"][i]] for i in range(len(feats))])
    terms = heterogeneity.heterogeneity_terms(
        feats,
        batch["label"],
        batch["subject"],
        trainer.class_centers.centers,
        trainer.subject_centers.centers,
        SUBJECT_LABELS,
    )
    return ce, [float(t) for t in terms]


class HeterogeneityTrainerTest(test_case.TestCase):
    def test_fit_metrics_and_loss_value(self):
        trainer = make_trainer()
        batch = make_batch()
        ce, terms = numpy_step_loss(trainer, batch)
        expected = ce + 0.05 * terms[0] + 0.05 * terms[1] + 0.005 * terms[2]
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        logs = trainer.evaluate(tf.data.Dataset.from_tensors(batch), return_dict=True, verbose=0)
        self.assertAllClose(logs["loss"], expected, atol=1e-5)
        self.assertAllClose(logs["subject_class_term"], terms[2], atol=1e-5)
        for key in ("ce", "class_term", "subject_term", "accuracy"):
            self.assertIn(key, logs)
        trainer.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
        before = [w.numpy().copy() for w in trainer.trainable_weights]
        history = trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        self.assertAllClose(history.history["loss"][0], expected, atol=1e-5)
        # Every trainable weight, centres included, received a finite non-zero update.
        for w, b in zip(trainer.trainable_weights, before):
            self.assertAllFinite(w)
            self.assertGreater(float(np.abs(w.numpy() - b).sum()), 0.0, msg=w.path)
        self.assertEqual(trainer.predict(batch["image"], verbose=0).shape, (4, 2))

    def test_degenerate_one_sample_and_absent_class(self):
        trainer = make_trainer()
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))
        batch = {k: v[:1] for k, v in make_batch().items()}
        history = trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        self.assertAllClose(history.history["subject_class_term"][0], 0.0)
        for w in trainer.weights:
            self.assertAllFinite(w)

    def test_one_hot_labels_and_bad_args(self):
        trainer = make_trainer()
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        batch = make_batch()
        ids = trainer.evaluate(tf.data.Dataset.from_tensors(batch), return_dict=True, verbose=0)
        batch["label"] = np.eye(2, dtype="float32")[batch["label"]]
        onehot = trainer.evaluate(tf.data.Dataset.from_tensors(batch), return_dict=True, verbose=0)
        self.assertAllClose(ids["loss"], onehot["loss"], op="reduction")
        with self.assertRaisesRegex(ValueError, "subject_labels"):
            make_trainer_bad = trainer_lib.HeterogeneityTrainer  # noqa: N806
            make_trainer_bad(
                trainer.featurizer, trainer.classifier, num_classes=2, subject_labels=[0, 2]
            )
        with self.assertRaisesRegex(ValueError, "lambda_class"):
            make_trainer(lambda_class=-1.0)

    def test_save_load(self):
        trainer = make_trainer(lambda_subject_class=0.01)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        trainer.fit(tf.data.Dataset.from_tensors(make_batch()), epochs=1, verbose=0)
        x = make_batch()["image"]
        revived = self.run_model_saving_test(trainer, x)
        self.assertEqual(revived.lambda_subject_class, 0.01)
        self.assertAllClose(revived.subject_centers.centers, trainer.subject_centers.centers)

    def test_mirrored_equals_single_device(self):
        # Global batch = two identical halves, so each replica's batch statistics
        # equal the global ones and one mirrored step must equal one device step.
        half = make_batch(4, seed=1)
        batch = {k: np.concatenate([v, v]) for k, v in half.items()}

        def run(strategy):
            keras.utils.set_random_seed(7)
            with strategy.scope():
                trainer = make_trainer()
                trainer.compile(optimizer=keras.optimizers.SGD(0.5))
            ds = tf.data.Dataset.from_tensors(batch)
            history = trainer.fit(ds, epochs=1, verbose=0)
            return [w.numpy() for w in trainer.trainable_weights], history.history["loss"][0]

        single_w, single_loss = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
        mirrored_w, mirrored_loss = run(test_case.two_cpu_strategy())
        self.assertAllClose(mirrored_loss, single_loss, atol=1e-5)
        for a, b in zip(mirrored_w, single_w):
            self.assertAllClose(a, b, atol=1e-5)
