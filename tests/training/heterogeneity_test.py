import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tfcell import training
from tfcell.data import pipeline
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


def numpy_ce(logits, labels):
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -np.mean(logp[np.arange(len(labels)), labels])


def numpy_masked_loss(trainer, batch, subject_labels):
    """CE + class term over every sample; subject terms over the samples whose
    subject has a centre (heterogeneity_terms on that subset)."""
    feats = trainer.featurizer.predict(batch["image"], verbose=0).astype("float64")
    logits = trainer.classifier.predict(feats, verbose=0).astype("float64")
    labels, subjects = batch["label"], batch["subject"]
    c1 = keras.ops.convert_to_numpy(trainer.class_centers.centers).astype("float64")
    c2 = keras.ops.convert_to_numpy(trainer.subject_centers.centers).astype("float64")
    class_term = sum(np.mean(((feats[labels == c] - c1[c]) ** 2).sum(1)) for c in np.unique(labels))
    known = np.array(
        [0 <= s < len(subject_labels) and subject_labels[s] != -1 for s in subjects], bool
    )
    if known.any():
        _, subject_term, pair_term = heterogeneity.heterogeneity_terms(
            feats[known], labels[known], subjects[known], c1, c2, subject_labels
        )
        subject_term, pair_term = float(subject_term), float(pair_term)
    else:
        subject_term = pair_term = 0.0
    return numpy_ce(logits, labels), [class_term, subject_term, pair_term]


def evaluate(trainer, batch):
    return trainer.evaluate(tf.data.Dataset.from_tensors(batch), return_dict=True, verbose=0)


class UnseenSubjectsTest(test_case.TestCase):
    def test_all_unseen_validation_fold_is_ce_plus_class_term(self):
        trainer = make_trainer()
        batch = make_batch(8, seed=3)
        # A held-out fold: every id beyond the 4 training subjects (global ids).
        batch["subject"] = np.array([4, 5, 6, 4, 7, 5, 9, 123456], "int32")
        ce, terms = numpy_masked_loss(trainer, batch, SUBJECT_LABELS)
        self.assertEqual(terms[1:], [0.0, 0.0])
        for jit in (False, True):
            trainer.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=jit)
            logs = evaluate(trainer, batch)
            self.assertAllClose(logs["loss"], ce + 0.05 * terms[0], op="reduction")
            self.assertAllClose(logs["ce"], ce, op="reduction")
            self.assertAllClose(logs["class_term"], terms[0], op="reduction")
            self.assertEqual(float(logs["subject_term"]), 0.0)
            self.assertEqual(float(logs["subject_class_term"]), 0.0)

    def test_fit_with_unseen_validation_data(self):
        trainer = make_trainer()
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))
        val = make_batch(8, seed=4)
        val["subject"] = val["subject"] + 10  # all unseen
        ce_val = None
        history = trainer.fit(
            tf.data.Dataset.from_tensors(make_batch(8)),
            validation_data=tf.data.Dataset.from_tensors(val),
            epochs=2,
            verbose=0,
        )
        ce_val, terms = numpy_masked_loss(trainer, val, SUBJECT_LABELS)
        self.assertAllClose(
            history.history["val_loss"][-1], ce_val + 0.05 * terms[0], op="reduction"
        )
        self.assertEqual(history.history["val_subject_term"], [0.0, 0.0])
        self.assertGreater(history.history["subject_term"][0], 0.0)
        for w in trainer.weights:
            self.assertAllFinite(w)

    def test_mixed_known_and_unknown_subjects(self):
        # Global ids 0..5: 1 and 4 are validation subjects (no centre, -1); 7, -1 out of range.
        subject_labels = [0, -1, 1, 0, -1, 1]
        inp = keras.Input((4,))
        featurizer = keras.Model(inp, keras.layers.Dense(3)(inp))
        cin = keras.Input((3,))
        classifier = keras.Model(cin, keras.layers.Dense(2)(cin))
        trainer = trainer_lib.HeterogeneityTrainer(
            featurizer, classifier, num_classes=2, subject_labels=subject_labels
        )
        rng = np.random.RandomState(5)
        subject = np.array([0, 1, 2, 3, 4, 5, 7, -1, 0, 2], "int32")
        batch = {
            "image": rng.rand(10, 4).astype("float32"),
            "label": np.array([0, 1, 1, 0, 0, 1, 1, 0, 0, 1], "int32"),
            "subject": subject,
        }
        ce, terms = numpy_masked_loss(trainer, batch, subject_labels)
        self.assertGreater(terms[1], 0.0)
        self.assertGreater(terms[2], 0.0)
        expected = ce + 0.05 * terms[0] + 0.05 * terms[1] + 0.005 * terms[2]
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        logs = evaluate(trainer, batch)
        self.assertAllClose(logs["loss"], expected, op="reduction")
        for i, name in enumerate(("class_term", "subject_term", "subject_class_term")):
            self.assertAllClose(logs[name], terms[i], op="reduction", msg=name)
        # Training on it: finite; the centres of ids without one get no gradient.
        before = keras.ops.convert_to_numpy(trainer.subject_centers.centers).copy()
        trainer.compile(optimizer=keras.optimizers.SGD(0.5))
        history = trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        self.assertAllClose(history.history["loss"][0], expected, op="reduction")
        after = keras.ops.convert_to_numpy(trainer.subject_centers.centers)
        self.assertAllFinite(after)
        np.testing.assert_array_equal(after[[1, 4]], before[[1, 4]])
        self.assertGreater(float(np.abs(after[[0, 2, 3, 5]] - before[[0, 2, 3, 5]]).sum()), 0.0)

    def test_training_batch_without_known_subject(self):
        trainer = make_trainer()
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))
        batch = make_batch(4)
        batch["subject"] = np.array([-3, 8, 8, 99], "int32")
        history = trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        self.assertEqual(history.history["subject_term"][0], 0.0)
        self.assertEqual(history.history["subject_class_term"][0], 0.0)
        for w in trainer.weights:
            self.assertAllFinite(w)

    def test_all_known_batch_equals_heterogeneity_terms(self):
        # The masked terms reduce to tfcell.losses.heterogeneity_terms.
        trainer = make_trainer()
        batch = make_batch(8, seed=6)
        ce, terms = numpy_step_loss(trainer, batch)
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        logs = evaluate(trainer, batch)
        for i, name in enumerate(("class_term", "subject_term", "subject_class_term")):
            self.assertAllClose(logs[name], terms[i], op="reduction", msg=name)

    def test_missing_subject_key_raises(self):
        trainer = make_trainer()
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        batch = make_batch()
        del batch["subject"]
        with self.assertRaisesRegex(ValueError, "subject"):
            evaluate(trainer, batch)


class GlobalSubjectIdsTest(test_case.TestCase):
    def test_two_record_tables_share_subject_ids(self):
        rng = np.random.RandomState(0)
        train_subjects = np.array(["p07", "p03", "h11", "h02", "p03", "h11"])
        train_labels = np.array([1, 1, 0, 0, 1, 0], "int32")
        val_subjects = np.array(["h05", "p01", "p01", "h05"])  # unseen subjects
        val_labels = np.array([0, 1, 1, 0], "int32")
        maps = pipeline.id_maps(
            pd.DataFrame({"subject": np.concatenate([train_subjects, val_subjects])})
        )
        train = pipeline.from_arrays(
            rng.rand(6, 2, 2, 3).astype("float32"), train_labels, subjects=train_subjects,
            id_maps=maps, output="dict", shuffle=False, batch_size=6,
        )  # fmt: skip
        val = pipeline.from_arrays(
            rng.rand(4, 2, 2, 3).astype("float32"), val_labels, subjects=val_subjects,
            id_maps=maps, output="dict", shuffle=False, batch_size=4,
        )  # fmt: skip
        train_ids = next(iter(train))["subject"].numpy()
        val_ids = next(iter(val))["subject"].numpy()
        expected = {name: i for i, name in enumerate(sorted(maps["subject"]))}
        self.assertEqual(train.id_maps["subject"], expected)
        self.assertEqual(val.id_maps["subject"], expected)
        np.testing.assert_array_equal(train_ids, [expected[s] for s in train_subjects])
        np.testing.assert_array_equal(val_ids, [expected[s] for s in val_subjects])
        # Per-table numbering (no id_maps) would alias: val "h05" -> 0, a training id.
        local = pipeline.from_arrays(
            rng.rand(4, 2, 2, 3).astype("float32"), val_labels, subjects=val_subjects,
            output="dict", shuffle=False, batch_size=4,
        )  # fmt: skip
        self.assertEqual(set(next(iter(local))["subject"].numpy().tolist()), {0, 1})

        subject_labels = trainer_lib.subject_labels_from(
            train_subjects, train_labels, maps["subject"]
        )
        # Sorted names h02 h05 h11 p01 p03 p07; h05 and p01 are validation-only.
        self.assertEqual(subject_labels, [0, -1, 0, -1, 1, 1])
        self.assertEqual(subject_labels[expected["h05"]], -1)
        self.assertEqual(subject_labels[expected["p01"]], -1)
        self.assertEqual(
            subject_labels, trainer_lib.subject_labels_from(train_ids, train_labels, len(expected))
        )

        inp = keras.Input((2, 2, 3))
        featurizer = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(inp)))
        cin = keras.Input((3,))
        classifier = keras.Model(cin, keras.layers.Dense(2)(cin))
        trainer = trainer_lib.HeterogeneityTrainer(
            featurizer, classifier, num_classes=2, subject_labels=subject_labels
        )
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = trainer.fit(train, validation_data=val, epochs=1, verbose=0)
        self.assertGreater(history.history["subject_term"][0], 0.0)
        self.assertEqual(history.history["val_subject_term"][0], 0.0)
        self.assertEqual(history.history["val_subject_class_term"][0], 0.0)

    def test_subject_labels_from_errors(self):
        with self.assertRaisesRegex(ValueError, "one class per subject"):
            trainer_lib.subject_labels_from(["a", "a"], [0, 1], {"a": 0})
        with self.assertRaisesRegex(ValueError, "not in id_map"):
            trainer_lib.subject_labels_from(["a", "b"], [0, 1], {"a": 0})
        with self.assertRaisesRegex(ValueError, r"\[0, 2\)"):
            trainer_lib.subject_labels_from([0, 2], [0, 1], 2)

    def test_bad_subject_labels(self):
        for bad in ([-1, -1], [0, -2], [0, 2], []):
            with self.assertRaisesRegex(ValueError, "subject_labels"):
                make_trainer_with(bad)
        trainer = make_trainer_with([None, 1, -1, 0])
        self.assertEqual(trainer.subject_labels, [-1, 1, -1, 0])


def make_trainer_with(subject_labels, regularizer=None):
    inp = keras.Input((4,))
    featurizer = keras.Model(
        inp, keras.layers.Dense(3, kernel_regularizer=regularizer, name="feat")(inp)
    )
    cin = keras.Input((3,))
    classifier = keras.Model(cin, keras.layers.Dense(2, name="head")(cin))
    return trainer_lib.HeterogeneityTrainer(
        featurizer, classifier, num_classes=2, subject_labels=subject_labels
    )


class LayerLossesAndSavingTest(test_case.TestCase):
    def test_layer_losses_are_added(self):
        plain = make_trainer_with(SUBJECT_LABELS)
        regularized = make_trainer_with(SUBJECT_LABELS, keras.regularizers.L2(0.3))
        regularized.set_weights(plain.get_weights())
        kernel = regularized.featurizer.get_layer("feat").kernel.numpy().astype("float64")
        penalty = 0.3 * np.sum(kernel**2)
        batch = make_batch(8, seed=2)
        for trainer in (plain, regularized):
            trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        base = evaluate(plain, batch)["loss"]
        self.assertAllClose(evaluate(regularized, batch)["loss"] - base, penalty, op="reduction")
        history = regularized.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        self.assertAllClose(history.history["loss"][0] - base, penalty, op="reduction")
        # The regulariser's gradient reaches the kernel: one SGD step differs by
        # exactly -lr * 2 * 0.3 * kernel from the unregularized step.
        for trainer in (plain, regularized):
            trainer.compile(optimizer=keras.optimizers.SGD(0.1))
            trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        diff = (
            regularized.featurizer.get_layer("feat").kernel.numpy()
            - plain.featurizer.get_layer("feat").kernel.numpy()
        )
        self.assertAllClose(diff, -0.1 * 2 * 0.3 * kernel, op="reduction")

    def test_save_load_with_unseen_subject_ids(self):
        trainer = make_trainer_with([0, -1, 1, 1, -1, 0], keras.regularizers.L2(0.01))
        self.run_serialization_test(trainer)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        batch = make_batch(8)
        batch["subject"] = np.array([0, 1, 2, 3, 4, 5, 6, 0], "int32")
        trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
        revived = self.run_model_saving_test(trainer, batch["image"])
        self.assertEqual(revived.subject_labels, [0, -1, 1, 1, -1, 0])
        self.assertAllClose(revived.subject_centers.centers, trainer.subject_centers.centers)
        revived.compile(optimizer=keras.optimizers.SGD(0.0))
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        self.assertAllClose(evaluate(revived, batch)["loss"], evaluate(trainer, batch)["loss"])

    def test_two_stage_schedule_with_trainer(self):
        trainer = make_trainer()
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        schedule = training.TwoStageSchedule(patience=1)
        history = trainer.fit(
            tf.data.Dataset.from_tensors(make_batch(8)), epochs=3, verbose=0, callbacks=[schedule]
        )
        self.assertEqual(history.history["stage"], [1, 1, 1])
        self.assertAllClose(history.history["learning_rate"], [1e-3] * 3)
        self.assertEqual(schedule.stage_start, {1: 0})

    def test_mirrored_with_layer_losses_and_unseen_subjects(self):
        # Regulariser / replicas and masked subject terms: one mirrored step equals
        # one device step (identical halves, so per-replica statistics are global).
        half = make_batch(4, seed=1)
        half["subject"] = np.array([0, 9, 1, -1], "int32")
        batch = {k: np.concatenate([v, v]) for k, v in half.items()}

        def run(strategy):
            keras.utils.set_random_seed(7)
            with strategy.scope():
                trainer = make_trainer_with(SUBJECT_LABELS, keras.regularizers.L2(0.2))
                trainer.compile(optimizer=keras.optimizers.SGD(0.5))
            history = trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
            return [w.numpy() for w in trainer.trainable_weights], history.history["loss"][0]

        single_w, single_loss = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
        mirrored_w, mirrored_loss = run(test_case.two_cpu_strategy())
        self.assertAllClose(mirrored_loss, single_loss, atol=1e-5)
        for a, b in zip(mirrored_w, single_w):
            self.assertAllClose(a, b, atol=1e-5)
