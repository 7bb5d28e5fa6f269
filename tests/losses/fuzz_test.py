"""Hypothesis fuzz: random small batches give finite values and gradients.

Batches of 1 to 6 samples, 2 to 5 classes, random labels (so some classes,
domains and subjects are absent), features scaled from 1e-3 up to 1e4. Each
loss is fed what its head would give it (affinities, cosines, logits), and
the gradient is taken with respect to the features.
"""

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from keras import ops

from tfcell import losses
from tfcell.testing import test_case

FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None)

batches = st.fixed_dictionaries(
    {
        "n": st.integers(1, 6),
        "num_classes": st.integers(2, 5),
        "scale": st.sampled_from([1e-3, 1.0, 30.0, 1e2, 1e4]),
        "seed": st.integers(0, 2**16),
    }
)


def _draw(n, num_classes, scale, seed, dim=4):
    rng = np.random.RandomState(seed)
    return {
        "features": (scale * rng.randn(n, dim)).astype("float32"),
        "labels": rng.randint(0, num_classes, n).astype("int32"),
        "weights": [float(w) for w in rng.uniform(0.0, 3.0, num_classes)],
        "prototypes": rng.randn(num_classes, dim).astype("float32"),
        "rng": rng,
    }


def _normalize(x):
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


def _value_and_grad(fn, features, connected):
    x = tf.convert_to_tensor(features)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = fn(x)
        total = ops.sum(value)
    # A penalty with no domain pair in the batch is a constant 0 (no gradient path).
    unconnected = tf.UnconnectedGradients.NONE if connected else tf.UnconnectedGradients.ZERO
    return value, tape.gradient(total, x, unconnected_gradients=unconnected)


class FuzzTest(test_case.TestCase):
    def assertFiniteWithGrad(self, fn, features, name, connected=True):
        value, grad = _value_and_grad(fn, features, connected)
        self.assertAllFinite(value, f"{name}: non-finite value {value}")
        self.assertIsNotNone(grad, f"{name}: no gradient path to the features")
        self.assertAllFinite(grad, f"{name}: non-finite gradient {grad}")

    @FUZZ
    @given(batches)
    def test_cfal(self, b):
        d = _draw(**b)

        def fn(x):
            # GaussianAffinity's formula (one centre per class), sigma 130.
            sq = ops.sum(ops.square(x[:, None, :] - d["prototypes"][None]), axis=-1)
            affinities = ops.exp(-sq / 130.0)
            return losses.cfal(d["labels"], affinities, 0.1, 2.0, d["weights"])

        self.assertFiniteWithGrad(fn, d["features"], "cfal")

    @FUZZ
    @given(batches)
    def test_margin_losses(self, b):
        d = _draw(**b)
        kernel = _normalize(ops.convert_to_tensor(d["prototypes"]))

        def cosines(x):
            return ops.matmul(_normalize(x), ops.transpose(kernel))

        cases = {
            "arcface": lambda x: losses.arcface(d["labels"], cosines(x), 0.5, 30.0, d["weights"]),
            "cosface": lambda x: losses.cosface(d["labels"], cosines(x), 0.35, 20.0, d["weights"]),
            "sphereface": lambda x: losses.sphereface(
                d["labels"], cosines(x), 0.35, 30.0, d["weights"]
            ),
            # A-Softmax: the radius is the feature norm (CosineHead(return_norms=True)).
            "sphereface_norms": lambda x: losses.sphereface(
                d["labels"],
                ops.concatenate([cosines(x), ops.norm(x, axis=-1, keepdims=True)], axis=-1),
                4.0,
                None,
                d["weights"],
            ),
        }
        for name, fn in cases.items():
            self.assertFiniteWithGrad(fn, d["features"], name)

    @FUZZ
    @given(batches)
    def test_class_balanced_focal(self, b):
        d = _draw(**b)

        def logits(x):
            return ops.matmul(x, ops.transpose(d["prototypes"]))

        for variant in ("softmax", "sigmoid"):
            self.assertFiniteWithGrad(
                lambda x, v=variant: losses.class_balanced_focal(
                    d["labels"], logits(x), 2.0, d["weights"], from_logits=True, variant=v
                ),
                d["features"],
                f"class_balanced_focal ({variant})",
            )

    @FUZZ
    @given(batches, st.integers(1, 3))
    def test_pairwise_domain_penalty(self, b, num_domains):
        d = _draw(**b)
        domains = d["rng"].randint(0, num_domains, b["n"]).astype("int32")
        for name, penalty_fn, min_samples in (
            ("coral", losses.coral, 2),
            ("mmd", losses.mmd, 1),
        ):
            self.assertFiniteWithGrad(
                lambda x, f=penalty_fn, m=min_samples: losses.pairwise_domain_penalty(
                    x, domains, num_domains, penalty_fn=f, min_samples=m
                ),
                d["features"],
                name,
                connected=False,
            )

    @FUZZ
    @given(batches, st.integers(1, 4))
    def test_heterogeneity_terms(self, b, num_subjects):
        d = _draw(**b)
        rng = d["rng"]
        subject_labels = rng.randint(0, b["num_classes"], num_subjects).astype("int32")
        subjects = rng.randint(0, num_subjects, b["n"]).astype("int32")
        labels = subject_labels[subjects]
        subject_centers = rng.randn(num_subjects, 4).astype("float32")

        def fn(x):
            terms = losses.heterogeneity_terms(
                x, labels, subjects, d["prototypes"], subject_centers, subject_labels
            )
            return ops.stack(terms)

        self.assertFiniteWithGrad(fn, d["features"], "heterogeneity_terms")
