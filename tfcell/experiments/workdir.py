"""A run's folder: its files, its jobs, and resume.

    <workdir>/
      config.json            the full config of the run (compared on resume)
      results.jsonl          one JSON line per evaluation, each with its `job` key
      run.json               hardware, versions, wall time
      jobs/<key>/            one folder per finished or running job:
        model.keras            the trained network (when the config keeps models)
        outputs.npz            validation / test scores and labels (for ensembles)
        done                   written last: the job is finished
      cache/                 decoded images (`tfcell.data.cache`), reused on resume
      report.md, figures/    the paper package's report
      done                   written last: the whole run is finished

A job is one unit of work keyed by `(setting, repeat, method)`:
`"<setting>/r<repeat>/<method>"`. Re-running the same command skips every job
whose `done` exists (DomainBed's convention, per job) and drops the lines of
jobs that were cut short, so a killed run loses at most the job it was in.
`restart=True` (the scripts' `--restart`) starts over.
"""

import json
import logging
import os
import shutil

import numpy as np

from tfcell.evaluation import report

__all__ = ["ConfigMismatchError", "Workdir", "job_key"]

logger = logging.getLogger("tfcell.experiments")

# Config keys that may change between a run and its resume (they change output
# verbosity, not results).
_VOLATILE = ("training.verbose",)
# Options added after runs were started, with the value those runs used: a
# config that holds the default compares equal to one without the key, so an
# older workdir still resumes.
_ADDED_DEFAULTS = {
    "mixed_precision": False,
    "training.jit_compile": False,
    "training.augment_in_model": False,
}


class ConfigMismatchError(ValueError):
    """The workdir holds a run of another config."""


def job_key(setting, repeat, method):
    """`"<setting>/r<repeat>/<method>"`, the key of one job."""
    for part in (setting, method):
        if not part or "/" in str(part) or str(part).startswith("."):
            raise ValueError(
                f"Setting and method names must be non-empty and contain no '/'; received "
                f"setting={setting!r}, method={method!r}."
            )
    return f"{setting}/r{int(repeat)}/{method}"


def _drop(config_dict, dotted):
    node = config_dict
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.get(p, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node.pop(leaf, None)


def _comparable(config_json):
    data = json.loads(config_json)
    for key in _VOLATILE:
        _drop(data, key)
    for key, default in _ADDED_DEFAULTS.items():
        if _get(data, key) is default:
            _drop(data, key)
    return data


def _get(config_dict, dotted):
    node = config_dict
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class Workdir:
    """The files of one run and the bookkeeping of its jobs.

    Args:
        path: the folder (created).
        config: the run's `ml_collections.ConfigDict`.
        restart: delete everything a previous run left and start over.

    Raises:
        ConfigMismatchError: the folder holds a run with another config (resume
            only continues the same command; pass `restart=True` or another
            workdir).
    """

    def __init__(self, path, config, restart=False):
        self.path = os.path.abspath(path)
        config_json = config.to_json_best_effort(indent=2, sort_keys=True)
        config_path = os.path.join(self.path, "config.json")
        if restart and os.path.isdir(self.path):
            for name in os.listdir(self.path):
                if name == "cache":  # Decoded images depend on files, not on the run.
                    continue
                target = os.path.join(self.path, name)
                shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
        os.makedirs(self.path, exist_ok=True)
        if os.path.exists(config_path):
            with open(config_path) as f:
                previous = f.read()
            if _comparable(previous) != _comparable(config_json):
                raise ConfigMismatchError(
                    f"{self.path} holds a run with another config (see its config.json). "
                    "Re-running resumes only the same command: pass --restart to start "
                    "over there, or choose another --workdir."
                )
            self.resumed = True
        else:
            self.resumed = False
        with open(config_path, "w") as f:
            f.write(config_json)
        done = os.path.join(self.path, report.DONE_FILE)
        if os.path.exists(done):
            os.remove(done)  # Written again when the run finishes.
        self._writer = report.ResultsWriter(self.path)
        self._prune_unfinished()

    # ------------------------------------------------------------ jobs
    def job_dir(self, key):
        path = os.path.join(self.path, "jobs", *key.split("/"))
        os.makedirs(path, exist_ok=True)
        return path

    def is_finished(self, key):
        return os.path.exists(os.path.join(self.path, "jobs", *key.split("/"), "done"))

    def finished_jobs(self):
        root = os.path.join(self.path, "jobs")
        keys = []
        for folder, _, files in os.walk(root):
            if "done" in files:
                keys.append(os.path.relpath(folder, root).replace(os.sep, "/"))
        return sorted(keys)

    def finish(self, key, records, outputs=None):
        """Writes a job's records and outputs, then its `done` (last)."""
        folder = self.job_dir(key)
        if outputs is not None:
            tmp = os.path.join(folder, "outputs.tmp.npz")
            np.savez(tmp, **{k: np.asarray(v) for k, v in outputs.items()})
            os.replace(tmp, os.path.join(folder, "outputs.npz"))
        for record in records:
            self._writer.write({**record, "job": key})
        with open(os.path.join(folder, "done"), "w") as f:
            f.write("done\n")

    def outputs(self, key):
        """The arrays a finished job saved (`finish(..., outputs=...)`), or None."""
        path = os.path.join(self.path, "jobs", *key.split("/"), "outputs.npz")
        if not os.path.exists(path):
            return None
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def _prune_unfinished(self):
        """Drops result lines of jobs without `done` (cut short by a crash or kill)."""
        records = report.read_results(self.path)
        keep = [r for r in records if "job" not in r or self.is_finished(r["job"])]
        if len(keep) != len(records):
            logger.warning(
                "resume: dropping %d result line(s) of unfinished jobs", len(records) - len(keep)
            )
            tmp = os.path.join(self.path, report.RESULTS_FILE + ".tmp")
            with open(tmp, "w") as f:
                for r in keep:
                    f.write(json.dumps(r, sort_keys=True) + "\n")
            os.replace(tmp, os.path.join(self.path, report.RESULTS_FILE))

    # ------------------------------------------------------------ files
    def records(self):
        return report.read_results(self.path)

    def write_json(self, name, obj):
        tmp = os.path.join(self.path, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(report._jsonable(obj), f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(self.path, name))

    def write_done(self):
        report.write_done(self.path)

    @property
    def cache_dir(self):
        return os.path.join(self.path, "cache")
