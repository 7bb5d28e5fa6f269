"""The experiment harness on two worker processes (loopback TF_CONFIG): only
the chief writes the workdir, and after a worker is killed mid-run, starting
both again resumes after the last finished job. In tests/experiments (not a
numerical test: it runs once in CI)."""

import glob
import json
import os
import sys
import time

import pytest

from tfcell.evaluation import report
from tfcell.testing.multi_worker import LocalCluster

pytestmark = pytest.mark.multi_worker


def _program(*args):
    return [sys.executable, "-m", "tfcell.testing.multi_worker_program", *args]


def _finished_jobs(workdir):
    return sorted(glob.glob(os.path.join(workdir, "jobs", "*", "*", "*", "done")))


def test_harness_on_two_workers_writes_on_the_chief_and_resumes_after_a_kill(tmp_path):
    chief_dir, worker_dir = tmp_path / "w0", tmp_path / "w1"
    command = _program("harness", f"--workdir={tmp_path}/w{{index}}", "--epochs=1")
    cluster = LocalCluster(2, command, log_dir=str(tmp_path / "logs")).start()
    try:
        cluster.wait_for(lambda: _finished_jobs(chief_dir), 240, "the chief's first finished job")
        cluster.kill(1)  # A worker dies mid-run ...
        deadline = time.monotonic() + 60
        while cluster.poll()[0] is None and time.monotonic() < deadline:
            time.sleep(0.2)
        chief_exit = cluster.poll()[0]
        cluster.kill()  # ... the chief stops in its next collective (or is stopped here).
        before = _finished_jobs(chief_dir)
        assert 1 <= len(before) < 4
        assert not (chief_dir / report.DONE_FILE).exists()
        cluster.start()  # Both start again, with the same command.
        cluster.wait(timeout=300)
    finally:
        cluster.kill()
    # The chief noticed the dead worker by itself (TF's coordination service).
    assert chief_exit not in (None, 0)
    run = json.loads((chief_dir / "run.json").read_text())
    assert run["resumed"] and run["workers"] == 2 and run["replicas"] == 2
    assert run["jobs_trained_this_attempt"] == 4 - len(before)
    records = report.read_results(str(chief_dir))
    jobs = [r["job"] for r in records]
    assert len(set(jobs)) == 4 and len(jobs) == len(records)  # Each job once.
    assert (chief_dir / report.DONE_FILE).exists()
    assert len(glob.glob(str(chief_dir / "jobs" / "*" / "*" / "*" / "model.keras"))) == 4
    # The worker wrote nothing: its --workdir was never created.
    assert not worker_dir.exists()
    assert "trained with the chief" in cluster.output(1)


def test_tf_data_service_with_several_workers_is_refused(tmp_path, monkeypatch):
    from tfcell import training
    from tfcell.experiments import tasks
    from tfcell.testing import multi_worker_program as program

    setting = program.toy_protocol().settings(program.toy_config(), 0)[0]
    monkeypatch.setattr(training, "is_multi_worker", lambda strategy=None: True)
    with pytest.raises(ValueError, match="several training workers"):
        tasks.SettingData(
            setting, 16, str(tmp_path), storage="tfrecord", service="grpc://localhost:5050"
        )


def test_a_sweep_on_several_workers_is_refused(tmp_path, monkeypatch):
    import json as json_lib

    from tfcell.experiments import sweep
    from tfcell.testing import multi_worker_program as program

    monkeypatch.setenv(
        "TF_CONFIG",
        json_lib.dumps(
            {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
        ),
    )
    monkeypatch.setattr(sweep, "require_keras_tuner", lambda: None)
    with pytest.raises(ValueError, match="Keras Tuner's own distributed tuning"):
        sweep.run_sweep(program.toy_protocol(), program.toy_config(), str(tmp_path))
    assert not os.listdir(tmp_path)  # Refused before anything is written.


def test_a_worker_of_a_reproduction_script_writes_nothing_and_exits_cleanly(
    tmp_path, monkeypatch, capsys
):
    # A reproduction's `main` as worker 1 runs it (run_script, not only the
    # runner): no workdir, no report path, exit value None (absl: 0).
    from tfcell.experiments import script
    from tfcell.testing import multi_worker_program as program
    from tfcell.training import loop

    monkeypatch.setattr(loop, "is_chief", lambda: False)
    monkeypatch.setattr(loop, "task_info", lambda: ("worker", 1, {"worker": ["a:1", "b:2"]}))
    config = program.toy_config(epochs=1)
    with config.unlocked():
        config.protocol = "tfcell.testing.multi_worker_program:toy_protocol"
    monkeypatch.setattr(script.protocol_lib, "load_protocol", lambda spec: program.toy_protocol())
    workdir = tmp_path / "run"
    assert script.run_script(config, str(workdir)) is None
    out = capsys.readouterr().out
    assert "the chief writes the report" in out and "worker: 4 job(s) trained" in out
    assert not workdir.exists()
