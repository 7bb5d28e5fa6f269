r"""Turns finished workdirs of any reproduction into the measured tables of
docs/papers.md.

    python reproductions/collect_results.py workdirs/cfal_idc_cpu workdirs/cfal_crc
    python reproductions/collect_results.py workdirs/cfal_idc_cpu --update_docs

Each workdir's `config.json` names its paper's protocol (e.g.
`tfcell.papers.cfal:IDC`), which renders the tables; workdirs without `done`
are listed as unfinished. With `--update_docs` each protocol's marked block of
docs/papers.md (`<!-- <marker>:start -->` ... `<!-- <marker>:end -->`) and each
script's docstring result line are rewritten; otherwise the tables are
printed. Nothing here is typed by hand: every number comes from the files.
"""

import os
import sys

from absl import app, flags

_UPDATE = flags.DEFINE_boolean("update_docs", False, "Rewrite the blocks in docs/papers.md.")
_DOCS = flags.DEFINE_string(
    "docs", os.path.join(os.path.dirname(__file__), "..", "docs", "papers.md"), "Docs file."
)


def main(argv):
    from tfcell.experiments import collect

    workdirs = argv[1:]
    if not workdirs:
        sys.exit("Give one or more workdirs, e.g. workdirs/cfal_idc_cpu.")
    if _UPDATE.value:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        for path in dict.fromkeys(collect.update_docs(workdirs, _DOCS.value, root)):
            print(f"Updated {os.path.normpath(path)}")
    else:
        for marker, text in collect.collect(workdirs).items():
            print(f"<!-- {marker} -->\n{text}")


if __name__ == "__main__":
    app.run(main)
