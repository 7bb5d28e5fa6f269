"""A thin test case on absl's parameterized.TestCase, public Keras API only."""

import math
import os
import tempfile
import typing

import keras
import numpy as np
from absl.testing import parameterized

# Machine epsilon (the gap between 1 and the next float) of each float dtype.
# bfloat16 is listed by hand: `np.finfo` does not know it.
_EPSILON = {
    "float16": 2.0**-10,
    "bfloat16": 2.0**-7,
    "float32": 2.0**-23,
    "float64": 2.0**-52,
}
# A short chain of elementwise ops (a few multiplies, an exp or log) loses a few
# ulps per op (vectorised exp/log are accurate to ~2 ulps): 16 ulps covers it.
_ELEMENTWISE_ULPS = 16
# A reduction of n terms summed in another order (oneDNN vs Eigen kernels,
# pairwise vs sequential sums, two replicas vs one device) differs by about
# sqrt(n) ulps of the terms' magnitude (random-walk rounding), so the
# elementwise budget is scaled by sqrt(n), with n at least 16 (the default,
# for the short sums, matmuls and means of small test batches).
_MIN_REDUCTION_SIZE = 16


class Tolerance(typing.NamedTuple):
    """`(rtol, atol)` for `np.testing.assert_allclose` / `TestCase.assertAllClose`."""

    rtol: float
    atol: float


def tolerance(dtype="float32", op="elementwise", size=None):
    """The tolerance for comparing a result computed in `dtype` with an exact
    (float64 or hand-computed) reference, derived from the dtype's machine
    epsilon instead of a number that happened to pass on one machine.

    Float32 results depend on the order of summation, and that order changes
    with the machine: TensorFlow enables oneDNN kernels by default on many x86
    CPUs (`TF_ENABLE_ONEDNN_OPTS`), which sum in another order than the Eigen
    kernels, and MirroredStrategy sums replica gradients in yet another. A
    hard `atol=1e-6` (8 float32 ulps) passes on one setting and fails on the
    other; this helper states the budget once:

        eps = machine epsilon of dtype        # float32: 1.19e-7
        elementwise: rtol = atol = 16 * eps                      # 1.9e-6
        reduction:   rtol = atol = 16 * eps * sqrt(max(size, 16)) # 7.6e-6 at size<=16

    `atol` assumes values of order one (as losses, cosines, affinities and
    initial weights are); for larger values `rtol` dominates.

    Args:
        dtype: the dtype the result was computed in (`"float16"`,
            `"bfloat16"`, `"float32"`, `"float64"`, or a numpy dtype).
        op: `"elementwise"` for a per-element formula, `"reduction"` when each
            compared value sums (or averages, or matmuls) several terms, or
            went through a gradient and an optimizer step.
        size: for `"reduction"`, the number of terms summed into each compared
            value (default: a small reduction, 16 terms).

    Returns:
        `Tolerance(rtol, atol)`, a named tuple.
    """
    name = keras.backend.standardize_dtype(dtype)
    if name not in _EPSILON:
        raise ValueError(
            f"tolerance() needs a float dtype; received dtype={dtype!r}. "
            f"Expected one of {sorted(_EPSILON)}."
        )
    ulps = _ELEMENTWISE_ULPS
    if op == "reduction":
        ulps *= math.sqrt(max(size or 0, _MIN_REDUCTION_SIZE))
    elif op != "elementwise":
        raise ValueError(f'tolerance() received op={op!r}; expected "elementwise" or "reduction".')
    if size is not None and op != "reduction":
        raise ValueError('tolerance(size=...) only applies to op="reduction".')
    value = ulps * _EPSILON[name]
    return Tolerance(rtol=value, atol=value)


class TestCase(parameterized.TestCase):
    """Adds serialization, layer and closeness helpers (as keras's test_case does)."""

    def setUp(self):
        super().setUp()
        keras.utils.clear_session()
        keras.utils.set_random_seed(1337)

    def assertAllClose(
        self, x, y, atol=None, rtol=None, msg=None, dtype=None, op="elementwise", size=None
    ):
        """`np.testing.assert_allclose` in float64, with `tolerance()` defaults.

        Unset `atol` / `rtol` come from `tolerance(dtype, op, size)`. `dtype`
        defaults to the least precise float dtype among `x` and `y`, and is never
        more precise than `keras.config.floatx()`: the reference is usually a
        float64 NumPy array and the result a float32 tensor or a Python float
        taken from one. Pass `dtype="float64"` to compare at float64 precision.
        """
        x = keras.ops.convert_to_numpy(x) if not isinstance(x, np.ndarray) else x
        y = keras.ops.convert_to_numpy(y) if not isinstance(y, np.ndarray) else y
        if atol is None or rtol is None:
            default = tolerance(dtype or _least_precise(x, y), op, size)
            atol = default.atol if atol is None else atol
            rtol = default.rtol if rtol is None else rtol
        np.testing.assert_allclose(
            np.asarray(x, "float64"),
            np.asarray(y, "float64"),
            atol=atol,
            rtol=rtol,
            err_msg=msg or "",
        )

    def assertAllFinite(self, x, msg=None):
        x = np.asarray(keras.ops.convert_to_numpy(x), "float64")
        self.assertTrue(np.all(np.isfinite(x)), msg or f"non-finite values: {x}")

    def run_serialization_test(self, instance):
        """Config round trip: `from_config(get_config())` gives an equal config,
        and `keras.saving.serialize/deserialize` finds the registered class."""
        config = instance.get_config()
        revived = instance.__class__.from_config(config)
        self.assertEqual(_plain(revived.get_config()), _plain(config))
        serialized = keras.saving.serialize_keras_object(instance)
        revived = keras.saving.deserialize_keras_object(serialized)
        self.assertIsInstance(revived, instance.__class__)
        self.assertEqual(_plain(revived.get_config()), _plain(config))
        return revived

    def run_model_saving_test(self, model, inputs):
        """Saves `model` to `.keras`, reloads it (safe_mode on) and checks predictions."""
        path = os.path.join(tempfile.mkdtemp(), "model.keras")
        expected = model.predict(inputs, verbose=0)
        model.save(path)
        revived = keras.saving.load_model(path, compile=True, safe_mode=True)
        self.assertAllClose(revived.predict(inputs, verbose=0), expected, atol=1e-5, rtol=1e-5)
        return revived

    def run_mirrored_fit_test(self, build_model, loss, x, y, learning_rate=0.1, atol=1e-5):
        """One SGD `fit` step on the global batch `(x, y)` under `MirroredStrategy`
        over two logical CPUs must give the same weights as on one device (as
        keras's distribute_test.py checks), and must move the weights.

        Args:
            build_model: `() -> keras.Model`, called inside each strategy's scope.
            loss: the compiled loss (a per-sample `keras.losses.Loss`).
            x, y: one global batch; each replica sees half of it.
        """
        import tensorflow as tf

        def fit_once(strategy, init):
            with strategy.scope():
                model = build_model()
                if init is not None:
                    model.set_weights(init)
                start = [w.copy() for w in model.get_weights()]
                model.compile(
                    optimizer=keras.optimizers.SGD(learning_rate), loss=loss, jit_compile=False
                )
            data = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
            model.fit(data, epochs=1, verbose=0, shuffle=False)
            return start, model.get_weights()

        start, single = fit_once(tf.distribute.get_strategy(), None)
        mirrored = two_cpu_strategy()
        self.assertEqual(mirrored.num_replicas_in_sync, 2)
        _, distributed = fit_once(mirrored, start)
        self.assertGreater(sum(float(np.abs(a - b).sum()) for a, b in zip(single, start)), 0.0)
        for a, b in zip(single, distributed):
            self.assertAllClose(a, b, atol=atol, rtol=atol)

    def run_layer_test(self, layer_cls, init_kwargs, input_shape, expected_output_shape):
        """Builds the layer, checks output shape, config round trip and a symbolic call."""
        layer = layer_cls(**init_kwargs)
        x = np.random.RandomState(0).normal(size=input_shape).astype("float32")
        y = layer(x)
        self.assertEqual(tuple(y.shape), tuple(expected_output_shape))
        self.assertEqual(
            tuple(layer.compute_output_shape(input_shape)), tuple(expected_output_shape)
        )
        self.run_serialization_test(layer)
        symbolic = keras.Input(shape=input_shape[1:])
        out = layer_cls(**init_kwargs)(symbolic)
        self.assertEqual(tuple(out.shape[1:]), tuple(expected_output_shape[1:]))
        return layer


def _least_precise(*values):
    """The least precise float dtype among `values`, capped at Keras's floatx."""
    names = [keras.config.floatx()]
    for value in values:
        dtype = np.asarray(value).dtype
        if dtype.kind == "f" or dtype.name == "bfloat16":
            names.append(keras.backend.standardize_dtype(dtype))
    return max(names, key=_EPSILON.__getitem__)


def _plain(config):
    """Makes a config comparable (tuples -> lists, numpy -> python)."""
    if isinstance(config, dict):
        return {k: _plain(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_plain(v) for v in config]
    if isinstance(config, np.ndarray):
        return config.tolist()
    if isinstance(config, np.generic):
        return config.item()
    return config


def two_cpu_strategy():
    """`MirroredStrategy` over the two logical CPUs that tests/conftest.py makes.

    Reduction goes through `ReductionToOneDevice` rather than the default
    collective all-reduce: with collectives, a second `MirroredStrategy` built in
    the same process (as a test session does, one per test) can reuse a
    collective instance key of an earlier one and abort with "Shape mismatch in
    the collective instance" (seen with TF 2.21 on CPU). The reduction is the same
    sum either way, so the tests still compare a mirrored step with one device.
    """
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
