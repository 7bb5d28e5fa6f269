"""Smoke tests of reproductions/ece_nuclei.py: the script with its smoke config
(synthetic nucleus scenes) writes results, models, report, figures and done,
and resumes only an unfinished job."""

import json
import os
import pathlib
import tempfile

import numpy as np
import pytest

from tfcell.testing.scripts import run_reproduction

_ARGS = []


def _run_script(workdir, *extra):
    return run_reproduction("ece_nuclei", workdir, *_ARGS, *extra)


@pytest.fixture(scope="module")
def run():
    workdir = tempfile.mkdtemp(prefix="ece_nuclei_")
    config = _run_script(workdir)
    return pathlib.Path(workdir), config


def _records(workdir):
    return [json.loads(line) for line in open(workdir / "results.jsonl")]


def test_smoke_run_writes_results_models_report_figures_and_done(run):
    workdir, _ = run
    for path in ("config.json", "results.jsonl", "report.md", "done", "figures/fractions.png",
                 "figures/overlay.png"):  # fmt: skip
        assert (workdir / path).exists(), path
    records = _records(workdir)
    assert {(r["setting"], r["method"], r["test_set"]) for r in records} == {
        (s, m, t)
        for s in ("frac030", "frac100")
        for m in ("unet_ce", "unet_ece", "yolo_ce", "yolo_ece")
        for t in ("val", "test")
    }
    for r in records:
        assert (workdir / "jobs" / r["setting"] / "r0" / r["method"] / "model.keras").exists()
        if r["task"] == "segmentation":
            assert 0.0 <= r["dice"] <= 1.0 and 0.0 <= r["aji"] <= 1.0
        else:
            assert 0.0 <= r["f1"] <= 1.0 and r["tp"] + r["fn"] > 0
        kept, total = r["train_nuclei_kept"], r["train_nuclei"]
        assert kept == (total if r["fraction"] == 1.0 else pytest.approx(0.3 * total, abs=12))
    report = (workdir / "report.md").read_text()
    assert "Table 3 layout" in report and "Table 4 layout" in report
    contract = json.loads((workdir / "config.json").read_text())["input_contract"]
    assert contract["crop_size"] == 32 and contract["value_range"] == [0.0, 255.0]


def test_saved_unet_segments_a_tile_of_any_size(run):
    from tfcell import models
    from tfcell.evaluation import segmentation

    workdir, _ = run
    model = models.load_model(workdir / "jobs" / "frac100" / "r0" / "unet_ece" / "model.keras")
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3)).astype("uint8")
    probability, instances = segmentation.predict_instances(model, image, tile=32, overlap=8)
    assert probability.shape == (50, 70) and instances.shape == (50, 70)


def test_the_same_command_resumes_only_unfinished_jobs(run):
    workdir, _ = run
    job = workdir / "jobs" / "frac030" / "r0" / "yolo_ece"
    stamps = {p: os.path.getmtime(p / "done") for p in (workdir / "jobs").glob("frac*/r0/*")}
    os.remove(job / "done")
    os.remove(workdir / "done")
    _run_script(str(workdir))
    assert (workdir / "done").exists()
    for path, stamp in stamps.items():
        if path != job:
            assert os.path.getmtime(path / "done") == stamp, path
    jobs = [r["job"] for r in _records(workdir)]
    assert jobs.count("frac030/r0/yolo_ece") == 2  # val + test, written once.
