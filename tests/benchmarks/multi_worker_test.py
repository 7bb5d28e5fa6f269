"""benchmarks/multi_worker.py: the table, ratios and the docs block, from
step times given by stand-ins for the two runs (the runs themselves, the
worker program on one process and on a loopback cluster, are tested in
tests/multi_worker_test.py)."""

import importlib.util
import os

from absl import flags

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "multi_worker.py")


def _load():
    for name in list(flags.FLAGS):  # The script defines its flags at import.
        if name in ("case", "rounds", "epochs", "num_examples", "size", "width",
                    "batch_size", "timeout", "worker_threads", "update_docs"):  # fmt: skip
            delattr(flags.FLAGS, name)
    spec = importlib.util.spec_from_file_location("_multi_worker_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_ratios_and_docs_block(tmp_path, monkeypatch, capsys):
    bench = _load()
    one = iter([0.010, 0.020, 0.010])
    two = iter([0.030, 0.020, 0.050])
    monkeypatch.setattr(bench, "_one_process", lambda out: (next(one), 1))
    monkeypatch.setattr(bench, "_two_workers", lambda out: (next(two), 2))
    docs = tmp_path / "scaling.md"
    docs.write_text(
        "a\n<!-- multi_worker_coral:start -->\nold\n<!-- multi_worker_coral:end -->\nb\n"
    )
    monkeypatch.setattr(bench, "DOCS", str(docs))
    flags.FLAGS(["multi_worker", "--case=coral", "--rounds=3", "--update_docs"])
    try:
        bench.main(["multi_worker"])
    finally:
        flags.FLAGS.unparse_flags()
    out = capsys.readouterr().out
    # Medians: one process 10 ms, two workers 30 ms; ratios 3, 1, 5 -> median 3.
    assert "| coral | 64 | 10.0 | 30.0 | 3.00 |" in out
    assert "per round: [3.0, 1.0, 5.0]" in out
    text = docs.read_text()
    assert "| coral | 64 | 10.0 | 30.0 | 3.00 |" in text and "old" not in text
    assert text.startswith("a\n") and text.endswith("b\n")


def test_step_seconds_leave_out_the_first_epoch(tmp_path):
    bench = _load()
    path = tmp_path / "timing0.json"
    path.write_text(
        '{"epoch_seconds": [9.0, 1.0, 3.0], "steps_per_epoch": [2, 2, 2], "replicas": 2}'
    )
    assert bench._step_seconds(str(path)) == (1.0, 2)
