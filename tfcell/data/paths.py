"""Where tfcell finds real data on disk."""

import os
import pathlib

ENV_VAR = "TFCELL_SHARED_DATA"


def shared_data_root():
    """Returns the real-data folder (`../shared/data`) or None when absent.

    Looked up, in order: the `TFCELL_SHARED_DATA` environment variable, then
    `../shared/data` relative to the current directory and to this repository.
    """
    candidates = []
    if os.environ.get(ENV_VAR):
        candidates.append(pathlib.Path(os.environ[ENV_VAR]))
    candidates.append(pathlib.Path.cwd().parent / "shared" / "data")
    repo_root = pathlib.Path(__file__).resolve().parents[2]
    candidates.append(repo_root.parent / "shared" / "data")
    for candidate in candidates:
        if (candidate / "README.md").exists():
            return candidate
    return None
