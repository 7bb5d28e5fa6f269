"""What a paper package gives the harness: its protocol.

A paper package (`tfcell/papers/<paper>/`) subclasses `Protocol` and names
the instance in its configs (`config.protocol = "tfcell.papers.<paper>:NAME"`);
the runner, the sweep and the collector find it there. The harness calls:

    settings(config, repeat)     -> [settings.Setting]   the data splits
    methods(config)              -> {name: methods.Method} in table order
    hparams(config, name)        -> dict                 default: config.loss[name]
    augmentation(config, seed)   -> augmentation or None (training batches)
    combine(setting, outputs, config) -> {name: [records]}  e.g. ensembles
    combined_names(config)       -> [name]               what combine_repeat makes
    combine_repeat(settings, outputs, config) -> {name: [records]}
                                 across a repeat's settings, e.g. the ensemble
                                 of k fold models on a shared test part; stored
                                 as jobs `combined/r<repeat>/<name>`
    write_report(workdir, config, records, run_info) -> path of report.md
    collect(name, config, records, run_info) -> markdown for docs/papers.md
    result_line(config, records, run_info)   -> the script docstring's line

and runs every job with `task` (`tasks.ClassificationTask()` by default).
"""

import importlib

from tfcell.experiments import tasks

__all__ = ["Protocol", "load_protocol"]


class Protocol:
    """Base class of a paper's protocol (see the module docstring)."""

    # The marked block of docs/papers.md the collector writes (`<!-- NAME:start -->`).
    docs_marker = None

    def __init__(self):
        self.task = tasks.ClassificationTask()

    def settings(self, config, repeat):
        raise NotImplementedError

    def methods(self, config):
        raise NotImplementedError

    def hparams(self, config, name):
        return dict(config.loss[name]) if name in config.get("loss", {}) else {}

    def augmentation(self, config, seed):
        return None

    def combine(self, setting, outputs, config):
        """`{name: [records]}` computed from finished jobs' saved outputs
        (`{method name: outputs dict}`); default none."""
        return {}

    def combined_names(self, config):
        """The names `combine_repeat` returns (so a resumed run knows they are done)."""
        return []

    def combine_repeat(self, settings, outputs, config):
        """`{name: [records]}` from every setting of one repeat: `settings` (in
        order) and `outputs` (`{setting name: {method name: outputs dict}}`);
        default none."""
        return {}

    def write_report(self, workdir, config, records, run_info):
        raise NotImplementedError

    def collect(self, name, config, records, run_info):
        return ""

    def result_line(self, config, records, run_info):
        return ""


def load_protocol(spec):
    """The `Protocol` named by `"package.module:NAME"` (a config's `protocol`)."""
    if ":" not in spec:
        raise ValueError(
            f"config.protocol must look like 'tfcell.papers.<paper>:NAME'; received {spec!r}."
        )
    module_name, attr = spec.split(":", 1)
    module = importlib.import_module(module_name)
    try:
        protocol = getattr(module, attr)
    except AttributeError as error:
        raise ValueError(f"{module_name} has no protocol {attr!r} (config.protocol).") from error
    if not isinstance(protocol, Protocol):
        raise TypeError(f"{spec} is a {type(protocol).__name__}, not a Protocol.")
    return protocol
