"""A thin test case on absl's parameterized.TestCase, public Keras API only."""

import os
import tempfile

import keras
import numpy as np
from absl.testing import parameterized


class TestCase(parameterized.TestCase):
    """Adds serialization, layer and closeness helpers (as keras's test_case does)."""

    def setUp(self):
        super().setUp()
        keras.utils.clear_session()
        keras.utils.set_random_seed(1337)

    def assertAllClose(self, x, y, atol=1e-6, rtol=1e-6, msg=None):
        x = keras.ops.convert_to_numpy(x) if not isinstance(x, np.ndarray) else x
        y = keras.ops.convert_to_numpy(y) if not isinstance(y, np.ndarray) else y
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
