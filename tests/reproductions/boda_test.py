"""Smoke tests of reproductions/boda_wbc.py: the script with its smoke config
(synthetic white cells from three hospitals) writes results, models, report and
done, resumes, and BoDA's centroids refresh on schedule inside the run."""

import json
import pathlib
import tempfile

import keras
import numpy as np
import pytest

import tfcell
from tfcell import training
from tfcell.testing.scripts import run_reproduction

# ERM and BoDA on every setting (every method is built and trained one step in
# tests/papers/boda_test.py; the smoke config itself runs all six).
_ARGS = ["--config.methods=('erm', 'boda')", "--config.data.protocols=('lodo', 'cv')"]


def _run_script(workdir, *extra):
    return run_reproduction("boda_wbc", workdir, *_ARGS, *extra)


@pytest.fixture(scope="module")
def run(request):
    """One smoke run, recording every centroid refresh (step, centroids ready)."""
    refreshes = []
    original = training.BoDATrainer.refresh_centroids

    def recording(self, dataset):
        step = int(keras.ops.convert_to_numpy(self.optimizer.iterations))
        refreshes.append((self.name, step))
        return original(self, dataset)

    training.BoDATrainer.refresh_centroids = recording
    workdir = tempfile.mkdtemp(prefix="boda_wbc_")
    try:
        _run_script(workdir)
    finally:
        training.BoDATrainer.refresh_centroids = original
    return pathlib.Path(workdir), refreshes


def _records(workdir):
    return [json.loads(line) for line in open(workdir / "results.jsonl")]


def test_smoke_run_writes_results_models_report_and_done(run):
    workdir, _ = run
    for path in ("config.json", "results.jsonl", "report.md", "done", "figures"):
        assert (workdir / path).exists(), path
    records = _records(workdir)
    settings = {r["setting"] for r in records}
    assert settings == {
        "lodo_hospital_0", "lodo_hospital_1", "lodo_hospital_2", "cv_fold0", "cv_fold1",
    }  # fmt: skip
    methods = {r["method"] for r in records}
    assert methods == {"erm", "boda"}
    for r in records:
        assert 0.0 <= r["f1_micro"] <= 1.0 and 0.0 <= r["f1_macro_present"] <= 1.0
        assert abs(r["f1_micro"] - r["accuracy"]) < 1e-9
    cv_parts = {r["test_set"] for r in records if r["setting"].startswith("cv_")}
    assert cv_parts == {"test:sources", "test:hospital_2"}
    models = sorted(workdir.glob("jobs/*/r0/*/model.keras"))
    assert len(models) == 5 * 2
    text = (workdir / "report.md").read_text()
    assert "SYNTHETIC DATA" in text and "Leave-one-domain-out" in text
    assert "poster F1-macro" in text and "Paired t-tests against ERM" in text
    for figure in ("confusion_unseen_erm.png", "confusion_unseen_boda.png", "features_tsne.png"):
        assert (workdir / "figures" / figure).stat().st_size > 1000, figure
    config = json.loads((workdir / "config.json").read_text())
    assert config["data"]["image_size"] == 24 and config["protocol"] == "tfcell.papers.boda:WBC"


def test_saved_trainers_reload_after_import_tfcell(run):
    workdir, _ = run
    path = workdir / "jobs" / "cv_fold0" / "r0" / "boda" / "model.keras"
    model = tfcell.models.load_model(path)
    assert isinstance(model, training.BoDATrainer)
    assert float(keras.ops.convert_to_numpy(model.centroids_ready)) == 1.0
    x = np.random.RandomState(0).uniform(0, 255, (3, 24, 24, 3)).astype("float32")
    assert model.predict(x, verbose=0).shape == (3, 5)


def test_boda_centroids_refresh_on_schedule(run):
    """Smoke: feat_update_freq 3, 2 epochs x 4 steps: refreshes before steps 3 and 6
    of every BoDA job, never at step 0."""
    _, refreshes = run
    steps = [s for _, s in refreshes]
    assert steps, "no centroid refresh happened"
    assert 0 not in steps and all(s % 3 == 0 for s in steps)
    jobs = 5  # 5 settings
    assert len(steps) == 2 * jobs and sorted(set(steps)) == [3, 6]


def test_the_same_command_resumes_only_unfinished_jobs(run):
    """As after a kill: one job without its `done` marker is the only one retrained."""
    workdir, _ = run
    (workdir / "jobs" / "cv_fold1" / "r0" / "boda" / "done").unlink()
    (workdir / "done").unlink()
    _run_script(workdir)
    assert json.loads((workdir / "run.json").read_text())["jobs_trained_this_attempt"] == 1
    records = _records(workdir)
    again = [r for r in records if r["setting"] == "cv_fold1" and r["method"] == "boda"]
    assert len(again) == 2  # One record per test part, not duplicated.
    assert (workdir / "done").exists()
