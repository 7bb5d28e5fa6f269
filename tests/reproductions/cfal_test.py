"""Smoke tests of reproductions/cfal_crc.py and reproductions/cfal_idc.py: each
`main` with its smoke config writes results.jsonl, report.md, the models and done."""

import importlib.util
import json
import os
import pathlib
import tempfile

import keras
import numpy as np
import pytest
from absl import flags

import tfcell  # noqa: F401  (registers the losses and layers for load_model)
from tfcell.evaluation import report

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"_{name}", ROOT / "reproductions" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs():
    """Runs both scripts once with their smoke configs (flags parsed by hand)."""
    out = {}
    for name in ("cfal_crc", "cfal_idc"):
        for flag in ("config", "workdir", "restart"):  # Each script defines the same flags.
            if flag in flags.FLAGS:
                delattr(flags.FLAGS, flag)
        script = _load_script(name)
        workdir = tempfile.mkdtemp(prefix=f"{name}_")
        flags.FLAGS([name, f"--config={ROOT}/configs/{name}.py:smoke", f"--workdir={workdir}"])
        # absl.app.run exits with main's return value: it must be None (status 0).
        assert script.main([name]) is None
        flags.FLAGS.unparse_flags()
        out[name] = workdir
    return out


@pytest.mark.parametrize("name", ["cfal_crc", "cfal_idc"])
def test_smoke_run_writes_everything(runs, name):
    workdir = pathlib.Path(runs[name])
    for path in ("config.json", "results.jsonl", "report.md", "done"):
        assert (workdir / path).exists(), path
    records = [json.loads(line) for line in open(workdir / "results.jsonl")]
    methods = {r["method"] for r in records}
    assert {"ce", "cfal", "cb_cosface", "ensemble_average", "ensemble_vote"} <= methods
    assert {r["repeat"] for r in records} == ({0, 1} if name == "cfal_idc" else {0})
    for r in records:
        assert 0.0 <= r["f1"] <= 1.0 and len(r["confusion"]) == len(r["class_names"])
    report = (workdir / "report.md").read_text()
    assert "SYNTHETIC DATA" in report and "paper P / R / F1 / acc" in report
    assert list((workdir / "figures").glob("confusion_*.png"))
    models = list(workdir.glob("jobs/*/r*/*/model.keras"))
    assert len(models) == (6 if name == "cfal_idc" else 3)  # 3 losses x repeats.
    assert "validation macro-F1" in report and "calibrated" in report


def test_saved_model_reloads_and_predicts_the_same(runs):
    workdir = pathlib.Path(runs["cfal_idc"])
    path = next(workdir.glob("jobs/*/r0/cfal/model.keras"))
    model = keras.saving.load_model(path, compile=True, safe_mode=True)
    size = model.input_shape[1]
    x = np.random.RandomState(0).uniform(0, 255, (4, size, size, 3)).astype("float32")
    first = model.predict(x, verbose=0)
    save = os.path.join(tempfile.mkdtemp(), "again.keras")
    model.save(save)
    again = keras.saving.load_model(save, compile=True, safe_mode=True)
    np.testing.assert_allclose(again.predict(x, verbose=0), first, rtol=1e-5, atol=1e-6)


def test_collect_results_builds_the_table(runs):
    from tfcell.experiments import collect

    blocks = collect.collect([runs["cfal_idc"], runs["cfal_crc"]])
    assert list(blocks) == ["cfal:measured"]  # The CFAL protocol's block of docs/papers.md.
    table = blocks["cfal:measured"]
    assert "cfal_idc" in table and "Cross-entropy" in table and "+-" in table
    assert "temperature" in table


def test_sweep_writes_best_trial():
    from tfcell.experiments import collect, sweep
    from tfcell.papers import cfal

    config = _load_config("cfal_idc", "smoke")
    config.sweep.methods = ("cfal",)
    config.sweep.max_trials = 1
    workdir = tempfile.mkdtemp(prefix="cfal_sweep_")
    best = sweep.run_sweep(cfal.IDC, config, workdir)
    assert set(best["cfal"]) == {"beta", "margin", "sigma", "gamma"}
    assert os.path.exists(os.path.join(workdir, "sweep", "best_hparams.json"))
    assert os.path.exists(os.path.join(workdir, "done"))
    assert os.path.exists(os.path.join(workdir, "config.json"))
    (table,) = collect.collect([workdir]).values()
    assert "Keras Tuner sweep" in table and "| cfal | 1 |" in table
    # A second call resumes: the finished method is skipped, the result kept.
    assert sweep.run_sweep(cfal.IDC, config, workdir) == best
    # Every sampled value lies in the Table III space of the config.
    for key, value in best["cfal"].items():
        assert value in list(config.sweep.space.cfal[key])


def _load_config(name, variant):
    spec = importlib.util.spec_from_file_location(
        f"_config_{name}", ROOT / "configs" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def test_result_line_comes_from_the_run(runs):
    from tfcell.experiments import collect
    from tfcell.papers import cfal

    line = cfal.IDC.result_line(*collect.load_run(runs["cfal_idc"]))
    assert line.startswith("Result: paper (Table IV): cfal macro-F1 0.83")
    records = [
        r for r in report.read_results(runs["cfal_idc"])
        if r["method"] == "cfal" and r["setting"] == "patient"
    ]  # fmt: skip
    assert "synthetic data" in line and f"over {len(records)} runs" in line
    assert f"{np.mean([r['f1'] for r in records]):.3f}" in line


@pytest.mark.parametrize("name", ["cfal_crc", "cfal_idc"])
def test_help_is_fast_and_lists_the_variants(name):
    """`--help` parses flags before TensorFlow is imported."""
    import subprocess
    import sys
    import time

    config = _load_config_module(name)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(ROOT / "reproductions" / f"{name}.py"), "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert out.returncode in (0, 1), out.stderr  # absl's --help exits with 1.
    for variant in config.VARIANTS:
        assert variant in out.stdout
    assert "--restart" in out.stdout
    assert elapsed < 5.0, f"--help took {elapsed:.1f} s (TensorFlow imported before parsing?)"


def test_failed_download_exits_non_zero_with_the_reason(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable, str(ROOT / "reproductions" / "cfal_crc.py"),
            f"--config={ROOT}/configs/cfal_crc.py:smoke", "--config.data.root=",
            "--config.data.download=True", f"--workdir={tmp_path}",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0
    assert "download" in out.stderr.lower() and "--config.data.root" in out.stderr
    assert not (tmp_path / "results.jsonl").exists()  # No silent synthetic fall-back.


def _load_config_module(name):
    spec = importlib.util.spec_from_file_location(f"_cfgmod_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
