"""Smoke tests of reproductions/heterogeneity_cnmc.py: the script with its smoke
config (synthetic C-NMC-like cells) writes results, fold models, the ensemble,
report, figures and done; it resumes; unseen validation subjects give a finite
L_H without subject terms; the two stages run; and the saved run predicts new
images in one call, agreeing with the run's own ensemble."""

import json
import os
import pathlib
import tempfile

import numpy as np
import pytest

from tfcell.testing.scripts import run_reproduction

# L_CE and L_H on 2 folds (every method is built in tests/papers/heterogeneity_test.py;
# the smoke config itself runs all four on 3 folds).
_ARGS = ["--config.methods=('ce', 'heterogeneity')", "--config.data.num_folds=2"]


def _run_script(workdir, *extra):
    return run_reproduction("heterogeneity_cnmc", workdir, *_ARGS, *extra)


@pytest.fixture(scope="module")
def run():
    workdir = tempfile.mkdtemp(prefix="heterogeneity_cnmc_")
    config = _run_script(workdir)
    return pathlib.Path(workdir), config


def _records(workdir):
    return [json.loads(line) for line in open(workdir / "results.jsonl")]


def test_smoke_run_writes_results_models_ensemble_report_and_done(run):
    workdir, _ = run
    for path in ("config.json", "results.jsonl", "report.md", "done", "figures/curves.png",
                 "figures/tsne.png"):  # fmt: skip
        assert (workdir / path).exists(), path
    records = _records(workdir)
    singles = [r for r in records if r.get("kind") == "single"]
    assert {(r["setting"], r["method"], r["test_set"]) for r in singles} == {
        (f"fold{k}", m, t)
        for k in range(2)
        for m in ("ce", "heterogeneity")
        for t in ("test", "test:fold")
    }
    for k in range(2):
        for m in ("ce", "heterogeneity"):
            assert (workdir / "jobs" / f"fold{k}" / "r0" / m / "model.keras").exists()
    ensembles = [r for r in records if r.get("kind") == "ensemble"]
    assert {(r["method"], r["rule"]) for r in ensembles} == {
        (m, rule) for m in ("ce", "heterogeneity")
        for rule in ("theta_0.95", "theta_0.98", "average", "maximum")
    }  # fmt: skip
    for r in singles + ensembles:
        assert 0.0 <= r["f1_weighted"] <= 1.0 and r["num_subjects"] >= 1
        assert set(r["subject_accuracy"]) and r["subject_accuracy_min"] <= r["accuracy"] + 1e-9
    report = (workdir / "report.md").read_text()
    for heading in ("Table 2", "Table A1", "Table 3", "Subject-level", "Paired tests",
                    "two-stage", "Fig. A1", "Fig. 2"):  # fmt: skip
        assert heading in report, heading
    contract = json.loads((workdir / "config.json").read_text())["input_contract"]
    assert contract["crop_size"] == 24 and contract["image_size"] == 32
    assert contract["class_names"] == ["neutrophil", "lymphocyte"]


def test_unseen_validation_subjects_and_the_two_stages(run):
    workdir, _ = run
    for r in _records(workdir):
        if r.get("kind") != "single":
            continue
        h = r["train_history"]
        # Validation patients have no centre: only CE + class term, never NaN.
        assert all(v == 0.0 for v in h["val_subject_term"] + h["val_subject_class_term"])
        assert np.isfinite(h["val_loss"]).all()
        # Smoke: stage 1 capped at 2 epochs, then stage 2 at 1e-5.
        assert h["stage"] == [1, 1, 2]
        np.testing.assert_allclose(h["learning_rate"], [1e-3, 1e-3, 1e-5], rtol=1e-5)
        if r["method"] == "heterogeneity":
            assert h["subject_class_term"][-1] > 0 and h["subject_term"][-1] > 0


def test_saved_run_predicts_new_images_as_its_ensemble(run):
    from tfcell.data import cache
    from tfcell.papers import heterogeneity
    from tfcell.papers.heterogeneity import predict

    workdir, config = run
    setting = heterogeneity.CNMC.settings(config, 0)[0]
    test = setting.parts["test"]
    images = cache.decoded_images(setting.records, config.data.image_size)[test]
    labels, scores = predict.predict_images(str(workdir), images, theta=0.95)
    assert scores.shape == (len(test), 2)
    (ensemble,) = [
        r for r in _records(workdir)
        if r.get("kind") == "ensemble" and r["method"] == "heterogeneity"
        and r["rule"] == "theta_0.95"
    ]  # fmt: skip
    accuracy = float(np.mean(labels == setting.labels("test")))
    np.testing.assert_allclose(accuracy, ensemble["accuracy"], atol=1.5 / len(test))
    with pytest.raises(ValueError, match="stored size"):
        predict.predict_images(str(workdir), images[:, :20, :20])
    with pytest.raises(FileNotFoundError, match="config.json"):
        predict.predict_images(str(workdir / "nowhere"), images)


def test_the_same_command_resumes_only_unfinished_jobs(run):
    """As after a kill: one job without its `done` marker is the only one retrained,
    and the ensemble of its method is recomputed."""
    workdir, _ = run
    job = workdir / "jobs" / "fold1" / "r0" / "heterogeneity"
    stamps = {
        p: os.path.getmtime(p / "outputs.npz")
        for p in (workdir / "jobs").glob("fold*/r0/*")
    }  # fmt: skip
    os.remove(job / "done")
    os.remove(workdir / "jobs" / "combined" / "r0" / "heterogeneity_ensemble" / "done")
    os.remove(workdir / "done")
    _run_script(str(workdir))
    assert (workdir / "done").exists()
    for path, stamp in stamps.items():
        changed = os.path.getmtime(path / "outputs.npz") != stamp
        assert changed == (path == job), path
    records = _records(workdir)
    jobs = [r["job"] for r in records]
    assert jobs.count("fold1/r0/heterogeneity") == 2  # One record per test part, not 4.
    assert jobs.count("combined/r0/heterogeneity_ensemble") == 4  # One per rule.
