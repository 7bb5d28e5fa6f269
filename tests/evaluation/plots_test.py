"""`import tfcell` and tfcell's plots leave the user's matplotlib backend alone.

Run in a fresh interpreter: the backend is chosen once per process, and the
test session itself may already have imported matplotlib.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import matplotlib

    before = matplotlib.get_backend()
    import tfcell
    after_import = matplotlib.get_backend()
    from tfcell.evaluation import plots

    path = os.path.join(sys.argv[1], "cm.png")
    plots.plot_confusion_matrix([[0.9, 0.1], [0.2, 0.8]], ["a", "b"], path, title="t")
    with open(path, "rb") as f:
        magic = f.read(4)
    after_plot = matplotlib.get_backend()
    figures = []
    if "matplotlib.pyplot" in sys.modules:
        figures = sys.modules["matplotlib.pyplot"].get_fignums()
    print(json.dumps({
        "before": before, "after_import": after_import, "after_plot": after_plot,
        "png": magic == b"\\x89PNG", "pyplot_figures": figures,
    }))
    """
)


def test_import_and_plot_keep_the_matplotlib_backend(tmp_path):
    # "svg" is a non-interactive backend other than Agg, so a module that
    # switched to Agg (or to anything else) would show up.
    env = dict(os.environ, MPLBACKEND="svg", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["before"] == "svg", report
    assert report["after_import"] == "svg", report
    assert report["after_plot"] == "svg", report
    assert report["png"], report
    assert report["pyplot_figures"] == [], report


def test_plots_module_neither_imports_pyplot_nor_sets_a_backend():
    import tfcell.evaluation.plots as plots

    with open(plots.__file__) as f:
        tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            imported.add(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr != "use", ast.unparse(node)
    assert not any("pyplot" in name for name in imported), imported
