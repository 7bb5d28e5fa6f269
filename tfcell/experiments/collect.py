"""The collector: finished workdirs -> the measured tables of docs/papers.md.

Each workdir's `config.json` names its paper's protocol (`protocol`), the
script it came from (`script`) and its name (`name`); the protocol renders its
tables (`Protocol.collect`) and the docstring result line
(`Protocol.result_line`). Workdirs are grouped by the protocol's
`docs_marker`, and each group replaces the text between
`<!-- MARKER:start -->` and `<!-- MARKER:end -->` in docs/papers.md. Any
paper works the same way; nothing here knows one. No number is typed by hand.
"""

import json
import os
import textwrap

from tfcell.evaluation import report
from tfcell.experiments import protocol as protocol_lib

__all__ = ["collect", "load_run", "update_docs"]


def load_run(workdir):
    """`(config dict, records, run_info)` of a workdir, or None if unfinished."""
    if not report.is_done(workdir):
        return None
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    run_info = {}
    path = os.path.join(workdir, "run.json")
    if os.path.exists(path):
        with open(path) as f:
            run_info = json.load(f)
    return config, report.read_results(workdir), run_info


def collect(workdirs):
    """`{docs marker: markdown}` for the given workdirs (unfinished ones listed)."""
    blocks = {}
    for workdir in workdirs:
        name = os.path.basename(os.path.normpath(workdir))
        if not os.path.exists(os.path.join(workdir, "config.json")):
            raise FileNotFoundError(f"{workdir} has no config.json: not a tfcell workdir.")
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
        protocol = protocol_lib.load_protocol(config["protocol"])
        marker = protocol.docs_marker or config.get("name", name)
        loaded = load_run(workdir)
        if loaded is None:
            text = f"### `{name}`\n\nNot finished (no `done` file).\n"
        else:
            text = protocol.collect(name, *loaded)
        blocks.setdefault(marker, []).append(text)
    return {marker: "\n".join(parts) for marker, parts in blocks.items()}


def update_docs(workdirs, docs_path, repo_root):
    """Writes each marker's block into `docs_path` and each finished run's result
    line into its script's docstring (`<!-- <name>:result:start -->`); returns
    the paths written."""
    written = []
    for marker, text in collect(workdirs).items():
        report.replace_marked_block(docs_path, marker, text)
        written.append(docs_path)
    for workdir in workdirs:
        loaded = load_run(workdir)
        if loaded is None:
            continue
        config, records, run_info = loaded
        protocol = protocol_lib.load_protocol(config["protocol"])
        line = protocol.result_line(config, records, run_info)
        if not line or not config.get("script"):
            continue
        line += f" (written by collect_results.py from `{os.path.basename(os.path.normpath(workdir))}`)."
        script = os.path.join(repo_root, config["script"])
        report.replace_marked_block(script, f"{config['name']}:result", textwrap.fill(line, 80))
        written.append(script)
    return written
