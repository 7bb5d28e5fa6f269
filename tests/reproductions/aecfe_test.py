"""Smoke tests of reproductions/aecfe_wbc.py: the script with its smoke config
(synthetic white cells, threshold masks) writes results, the detector,
autoencoder and oracle models, the report with its figures and done; a saved
run turns a folder of cell images into latent codes; and the same command
resumes only an unfinished job (the detector and autoencoders are reused)."""

import importlib.util
import json
import os
import pathlib
import tempfile

import numpy as np
import pytest
from PIL import Image

from tfcell.testing.scripts import run_reproduction

ROOT = pathlib.Path(__file__).resolve().parents[2]
METHODS = ("rcnn_rf", "ae_rf", "nd_ae_da", "aae_da", "ae_cfe", "oracle_cnn")
DOMAINS = ("hospital_0", "hospital_1", "hospital_2")


def _run_script(workdir, *extra):
    return run_reproduction("aecfe_wbc", workdir, *extra)


@pytest.fixture(scope="module")
def run():
    workdir = tempfile.mkdtemp(prefix="aecfe_wbc_")
    config = _run_script(workdir)
    return pathlib.Path(workdir), config


def _records(workdir):
    return [json.loads(line) for line in open(workdir / "results.jsonl")]


def test_smoke_run_writes_results_models_report_figures_and_done(run):
    workdir, _ = run
    for path in ("config.json", "results.jsonl", "report.md", "done", "figures/latent.png",
                 "figures/reconstructions.png", "detector/model.keras", "detector/cells.npz",
                 "detector/summary.json"):  # fmt: skip
        assert (workdir / path).exists(), path
    records = _records(workdir)
    assert {(r["setting"], r["method"], r["test_set"]) for r in records} == {
        (f"from_{s}", m, f"test:{t}") for s in DOMAINS for m in METHODS for t in DOMAINS
    }
    for r in records:
        assert r["source"] == r["setting"][5:] and r["test_set"] == f"test:{r['target']}"
        assert 0.0 <= r["accuracy"] <= 1.0 and r["num_test"] > 0
        assert r["kind"] == ("oracle" if r["method"] == "oracle_cnn" else "forest")
    for method in ("ae_rf", "nd_ae_da", "aae_da", "ae_cfe"):
        folder = workdir / "autoencoders" / "r0" / method
        for name in ("model.keras", "codes.npz", "examples.npz", "info.json", "done"):
            assert (folder / name).exists(), (method, name)
    for source in DOMAINS:
        assert (workdir / "jobs" / f"from_{source}" / "r0" / "oracle_cnn" / "model.keras").exists()
    report = (workdir / "report.md").read_text()
    for section in ("Table 3.2 layout", "Table 3.3 layout", "Summary", "Detector", "not run"):
        assert section in report, section
    detection = records[0]["detector"]["detection"]
    assert detection["all"]["images"] == 240
    assert sum(detection[d]["images"] for d in DOMAINS) == 240
    contract = json.loads((workdir / "config.json").read_text())["input_contract"]
    assert contract["image_size"] == 32 and contract["latent_dim"] == 8


def test_the_forest_jobs_saved_disjoint_training_and_test_rows(run):
    workdir, _ = run
    for source in DOMAINS:
        with np.load(workdir / "jobs" / f"from_{source}" / "r0" / "ae_cfe" / "outputs.npz") as f:
            train = set(f["train_rows"])
            for target in DOMAINS:
                assert not train & set(f[f"test:{target}_rows"])


def test_a_saved_run_encodes_a_folder_of_cell_images(run, tmp_path):
    from tfcell.papers.aecfe import predict

    workdir, _ = run
    with np.load(workdir / "detector" / "cells.npz") as f:
        found = f["found"]
    with np.load(workdir / "autoencoders" / "r0" / "ae_cfe" / "codes.npz") as f:
        saved = f["codes"]
    images = _smoke_images()
    rows = np.flatnonzero(found)[:5]
    for i in rows:
        folder = tmp_path / ("lymphocyte" if i % 2 else "neutrophil")
        folder.mkdir(exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"cell{i:03d}.png")
    out = predict.encode_folder(str(workdir), str(tmp_path))
    assert len(out["paths"]) == 5 and out["codes"].shape == (5, 8)
    order = sorted(rows, key=lambda i: ("lymphocyte" if i % 2 else "neutrophil", i))
    # The same pixels give the run's own codes (PNG is lossless).
    np.testing.assert_allclose(out["codes"], saved[order], rtol=1e-4, atol=1e-4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image"):
        predict.encode_folder(str(workdir), str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="r3"):
        predict.encode_folder(str(workdir), str(tmp_path / "neutrophil"), repeat=3)


def _smoke_config():
    spec = importlib.util.spec_from_file_location("_cfg", ROOT / "configs" / "aecfe_wbc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke")


def _smoke_images():
    from tfcell.papers.aecfe import data

    return data.load_table(_smoke_config()).images


def test_the_same_command_resumes_only_unfinished_jobs(run):
    workdir, _ = run
    job = workdir / "jobs" / "from_hospital_1" / "r0" / "ae_cfe"
    stamps = {p: os.path.getmtime(p / "done") for p in (workdir / "jobs").glob("from_*/r0/*")}
    reused = [workdir / "detector" / "model.keras",
              workdir / "autoencoders" / "r0" / "ae_cfe" / "model.keras"]  # fmt: skip
    before = {p: os.path.getmtime(p) for p in reused}
    os.remove(job / "done")
    os.remove(workdir / "done")
    _run_script(str(workdir))
    assert (workdir / "done").exists()
    for path, stamp in stamps.items():
        if path != job:
            assert os.path.getmtime(path / "done") == stamp, path
    assert os.path.getmtime(job / "done") > stamps[job]
    assert {p: os.path.getmtime(p) for p in reused} == before  # Not retrained.
    jobs = [r["job"] for r in _records(workdir)]
    assert jobs.count("from_hospital_1/r0/ae_cfe") == 3  # One line per test domain, once.
