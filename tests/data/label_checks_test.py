"""Bad labels and non-finite images are refused where data enters tfcell.data,
with the file path or array index in the message."""

import os
import tempfile

import numpy as np
import pandas as pd
from PIL import Image

from tfcell.data import pipeline, records
from tfcell.testing import test_case

CLASSES = ["a", "b", "c"]


def _rows(labels, folder=None):
    rows = []
    for i, label in enumerate(labels):
        path = ""
        if folder is not None:
            path = os.path.join(folder, f"img{i}.png")
            Image.fromarray(np.full((4, 4, 3), 10 * i, "uint8")).save(path)
        name = CLASSES[label] if isinstance(label, int) and 0 <= label < 3 else "a"
        rows.append(
            {"path": path, "label": label, "class_name": name, "domain": "d", "subject": ""}
        )
    return rows


class RecordsLabelChecksTest(test_case.TestCase):
    def test_make_records_names_the_file(self):
        for bad in (3, -1, float("nan"), 1.5):
            with self.assertRaisesRegex(ValueError, r"make_records: 1 label\(s\).*\[0, 3\).*x/2"):
                records.make_records(
                    [{**r, "path": f"x/{i}"} for i, r in enumerate(_rows([0, 1, bad]))], CLASSES
                )

    def test_validate_records_names_files_and_range(self):
        frame = pd.DataFrame(_rows([0, 1, 2]))
        frame["path"] = ["p0.png", "p1.png", "p2.png"]
        records.validate_records(frame, CLASSES)
        frame.loc[1, "label"] = 7
        with self.assertRaisesRegex(
            ValueError, r"\[0, 3\) \(C = 3\); received labels in \[0, 7\]: p1.png \(label 7\)"
        ):
            records.validate_records(frame, CLASSES)

    def test_check_labels_lists_at_most_five(self):
        with self.assertRaisesRegex(ValueError, r"7 label\(s\).*index 4.* and 2 more"):
            records.check_labels(np.full(7, 9), 3)
        records.check_labels(np.array([0.0, 2.0]), 3)  # Integral floats are fine.
        records.check_labels([], 3)


class PipelineLabelChecksTest(test_case.TestCase):
    def test_from_arrays_labels(self):
        images = np.zeros((5, 4, 4, 3), "uint8")
        for bad, pattern in ((3, r"index 2 \(label 3\)"), (-1, r"index 2 \(label -1\)")):
            labels = np.array([0, 1, bad, 2, 0])
            with self.assertRaisesRegex(ValueError, rf"from_arrays: .*\[0, 3\).*{pattern}"):
                pipeline.from_arrays(images, labels, num_classes=3)
        with self.assertRaisesRegex(ValueError, r"index 1 \(label .*nan\)"):
            pipeline.from_arrays(images, np.array([0, np.nan, 1, 2, 0]))
        # Without num_classes only negative / non-integer labels are refused.
        pipeline.from_arrays(images, np.array([0, 1, 7, 2, 0]))
        with self.assertRaisesRegex(ValueError, "index 2"):
            pipeline.from_arrays(images, np.array([0, 1, -7, 2, 0]))

    def test_from_arrays_nan_images(self):
        images = np.zeros((5, 4, 4, 3), "float32")
        images[3, 1, 2, 0] = np.nan
        images[4, 0, 0, 1] = np.inf
        with self.assertRaisesRegex(ValueError, r"2 image\(s\) contain NaN or inf.*index 3, 4"):
            pipeline.from_arrays(images, np.zeros(5, "int32"))
        with self.assertRaisesRegex(ValueError, "index 3, 4"):
            pipeline.check_images(images, chunk=2)

    def test_from_records_names_the_file(self):
        folder = tempfile.mkdtemp()
        frame = records.make_records(_rows([0, 1, 2], folder), CLASSES)
        dataset = pipeline.from_records(frame, 4, batch_size=3, shuffle=False)
        _, labels = next(iter(dataset))
        self.assertAllClose(labels, [0, 1, 2])
        frame.loc[1, "label"] = 3  # Corrupted after make_records.
        with self.assertRaisesRegex(ValueError, r"from_records: .*\[0, 3\).*img1.png \(label 3\)"):
            pipeline.from_records(frame, 4)
        with self.assertRaisesRegex(ValueError, r"\[0, 2\).*img1.png"):
            frame.loc[1, "label"] = 2
            pipeline.from_records(frame, 4, num_classes=2)

    def test_from_records_in_memory_nan_image(self):
        rows = _rows([0, 1, 2])
        frame = pd.DataFrame(rows)
        frame["image"] = [np.zeros((4, 4, 3), "float32") for _ in rows]
        frame.at[2, "image"] = np.full((4, 4, 3), np.nan, "float32")
        frame.attrs["class_names"] = CLASSES
        with self.assertRaisesRegex(ValueError, "NaN or inf values, at index 2"):
            pipeline.from_records(frame, 4)
        frame.loc[0, "label"] = 5
        with self.assertRaisesRegex(ValueError, r"row 0 \(label 5\)"):
            pipeline.from_records(frame, 4)
