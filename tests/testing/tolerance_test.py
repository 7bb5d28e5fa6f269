"""tfcell.testing.tolerance and the dtype-derived assertAllClose defaults."""

import math

import numpy as np

from tfcell import testing


class ToleranceTest(testing.TestCase):
    def test_float32_values(self):
        eps = 2.0**-23
        self.assertEqual(testing.tolerance("float32"), (16 * eps, 16 * eps))
        self.assertEqual(testing.tolerance("float32", "reduction").atol, 64 * eps)
        self.assertEqual(testing.tolerance("float32", "reduction", size=4).atol, 64 * eps)
        self.assertAlmostEqual(
            testing.tolerance("float32", "reduction", size=1024).atol, 16 * eps * math.sqrt(1024)
        )

    def test_follows_the_dtype(self):
        order = ["float64", "float32", "float16", "bfloat16"]
        atols = [testing.tolerance(dtype).atol for dtype in order]
        self.assertEqual(atols, sorted(atols))
        self.assertEqual(testing.tolerance(np.float16), testing.tolerance("float16"))

    def test_rtol_atol_order_matches_numpy(self):
        rtol, atol = testing.tolerance("float32", "reduction")
        self.assertTrue(np.allclose(1.0, 1.0 + 0.5 * atol, *testing.tolerance("float32")))
        self.assertEqual((rtol, atol), tuple(testing.tolerance("float32", "reduction")))

    def test_invalid_arguments(self):
        with self.assertRaisesRegex(ValueError, "float dtype"):
            testing.tolerance("int32")
        with self.assertRaisesRegex(ValueError, "elementwise"):
            testing.tolerance("float32", "sum")
        with self.assertRaisesRegex(ValueError, "size"):
            testing.tolerance("float32", size=8)

    def test_assert_all_close_defaults_follow_the_inputs(self):
        eps32 = testing.tolerance("float32").atol
        # float64 reference vs float32 result: float32 tolerance.
        self.assertAllClose(np.float32(1.0), np.float64(1.0) + 0.5 * eps32)
        with self.assertRaises(AssertionError):
            self.assertAllClose(np.float32(1.0), np.float64(1.0) + 4 * eps32)
        # A reduction gets sqrt(16) = 4 times more.
        self.assertAllClose(np.float32(1.0), np.float64(1.0) + 3 * eps32, op="reduction")
        # float16 values get float16's tolerance.
        self.assertAllClose(np.float16(1.0), np.float64(1.0) + 1e-3)
        # float64 only when asked for.
        with self.assertRaises(AssertionError):
            self.assertAllClose(1.0, 1.0 + 1e-9, dtype="float64")
