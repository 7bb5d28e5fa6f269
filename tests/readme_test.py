"""The README's usage example runs as written."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_usage_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:1]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    probs = namespace["probabilities"].predict(namespace["images"][:8], verbose=0)
    assert probs.shape == (8, 9)
    assert abs(float(probs.sum(axis=1).mean()) - 1.0) < 1e-4
    assert (tmp_path / "cfal_probabilities.keras").exists()
