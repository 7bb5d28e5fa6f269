"""Loading a `.keras` file that holds tfcell objects, with and without tfcell.

Without `import tfcell`, Keras 3.15 cannot be made to say "import tfcell" (see
tfcell/models/saving.py), but its error names the tfcell module and the
registered "tfcell>..." name; the subprocess below checks that it still does.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import keras
import numpy as np

import tfcell
from tfcell import testing

_LOAD_WITHOUT_TFCELL = textwrap.dedent(
    """
    import json, sys
    import keras

    try:
        keras.saving.load_model(sys.argv[1])
        message = None
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
    print(json.dumps({"tfcell_imported": "tfcell" in sys.modules, "error": message}))
    """
)


def _model():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3),
            tfcell.layers.GaussianAffinity(3, sigma=1.0, name="head"),
        ]
    )
    model.compile(optimizer="sgd", loss=tfcell.losses.CFALoss(margin=0.1))
    return model


class SavingTest(testing.TestCase):
    def setUp(self):
        super().setUp()
        self.path = os.path.join(tempfile.mkdtemp(), "model.keras")
        self.x = np.random.RandomState(0).rand(5, 4).astype("float32")
        self.model = _model()
        self.model.save(self.path)

    def test_load_model_restores_tfcell_objects(self):
        revived = tfcell.models.load_model(self.path)
        self.assertIsInstance(revived.layers[-1], tfcell.layers.GaussianAffinity)
        self.assertIsInstance(revived.loss, tfcell.losses.CFALoss)
        self.assertAllClose(
            revived.predict(self.x, verbose=0), self.model.predict(self.x, verbose=0)
        )

    def test_plain_keras_without_tfcell_names_tfcell_in_its_error(self):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        result = subprocess.run(
            [sys.executable, "-c", _LOAD_WITHOUT_TFCELL, self.path],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        report = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertFalse(report["tfcell_imported"])
        error = report["error"]
        self.assertIsNotNone(error, "the model loaded without tfcell's classes")
        self.assertIn("Could not locate class 'GaussianAffinity'", error)
        self.assertIn("tfcell>GaussianAffinity", error)
        self.assertIn("'module': 'tfcell.layers.gaussian_affinity'", error)
        # Keras offers no public hook to add "import tfcell" to this message.
        self.assertNotIn("import tfcell", error)
