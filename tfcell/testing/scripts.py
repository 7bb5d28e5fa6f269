"""Runs a reproduction script in this process, as its command line would.

The reproduction tests call each script's `main` in-process (seconds, against
a subprocess's TensorFlow start-up) with the smoke config. absl keeps flags
global, so every call first removes the flags a previous script defined.

Example:
```python
config = run_reproduction("ece_nuclei", workdir, "--config.training.epochs=1")
```
"""

import importlib.util
import os
import sys

__all__ = ["REPO_ROOT", "run_reproduction"]

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def run_reproduction(name, workdir, *extra, variant="smoke", root=REPO_ROOT):
    """`python reproductions/<name>.py --config=configs/<name>.py:<variant>
    --workdir=<workdir> <extra...>`, in this process.

    Args:
        name: the script and config module name, e.g. "aecfe_wbc".
        workdir: the run's folder.
        *extra: further flags, e.g. "--config.methods=('erm',)" or "--restart".
        variant: the config variant (default "smoke").
        root: the repository root (holding reproductions/ and configs/).

    Returns:
        The parsed config (`script._CONFIG.value`) the run used.
    """
    from absl import flags

    for flag in list(flags.FLAGS):  # Each script defines --config (and its overrides).
        if flag in ("config", "workdir", "restart") or flag.startswith("config."):
            delattr(flags.FLAGS, flag)
    argv = [name, f"--config={root}/configs/{name}.py:{variant}", f"--workdir={workdir}"]
    argv += list(extra)
    spec = importlib.util.spec_from_file_location(
        f"_{name}", os.path.join(root, "reproductions", f"{name}.py")
    )
    script = importlib.util.module_from_spec(spec)
    # ml_collections reads the `--config.<key>` overrides from sys.argv when it
    # parses --config, as on a real command line.
    saved, sys.argv = sys.argv, argv
    try:
        spec.loader.exec_module(script)
        flags.FLAGS(argv)
        config = script._CONFIG.value
    finally:
        sys.argv = saved
    try:
        result = script.main([name])
        if result is not None:  # absl would exit with main's value.
            raise AssertionError(f"{name}.main returned {result!r}, expected None.")
    finally:
        flags.FLAGS.unparse_flags()
    return config
