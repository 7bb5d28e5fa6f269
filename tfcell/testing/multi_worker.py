"""A cluster of local worker processes on loopback ports, for tests and
benchmarks of `MultiWorkerMirroredStrategy`.

Each worker is a separate Python process with its own `TF_CONFIG`
(`127.0.0.1:<free port>` addresses); the cluster kills every process it
started when it is closed, so a test never leaves a worker behind.

Example:
```python
with LocalCluster(2, [sys.executable, "program.py", "--out", out]) as cluster:
    cluster.wait(timeout=120)          # raises if a worker fails or hangs
    print(cluster.output(0))
```
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

__all__ = ["LocalCluster", "WorkerFailed", "free_ports", "tf_config"]


class WorkerFailed(RuntimeError):
    """A worker exited with an error or did not finish in time."""


def free_ports(n):
    """`n` distinct free TCP ports on 127.0.0.1."""
    sockets, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def tf_config(ports, index, task_type="worker"):
    """The `TF_CONFIG` JSON of worker `index` of a loopback cluster on `ports`."""
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": task_type, "index": int(index)},
        }
    )


class LocalCluster:
    """`num_workers` processes running `command`, each with its own `TF_CONFIG`.

    Args:
        num_workers: processes to start (worker 0 is the chief).
        command: the argv every worker runs (the same for all, as on a real
            cluster); `{index}` in an argument is replaced by the worker's index.
        env: extra environment variables for every worker.
        log_dir: where each worker's stdout+stderr goes (`worker<i>.log`);
            default: a temporary folder.
        ports: the ports to use (default: free ones); pass the previous
            cluster's `ports` to restart "the same" cluster.
    """

    def __init__(self, num_workers, command, env=None, log_dir=None, ports=None):
        import tempfile

        self.num_workers = int(num_workers)
        self.command = list(command)
        self.env = dict(env or {})
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="tfcell-cluster-")
        os.makedirs(self.log_dir, exist_ok=True)
        self.ports = list(ports) if ports else free_ports(self.num_workers)
        self.processes = [None] * self.num_workers
        self._logs = [None] * self.num_workers
        self._attempt = 0

    def log_path(self, index):
        return os.path.join(self.log_dir, f"worker{index}.attempt{self._attempt}.log")

    def start(self, indices=None):
        """Starts the workers (all, or `indices`); returns self."""
        self._attempt += 1
        for index in range(self.num_workers) if indices is None else indices:
            env = dict(os.environ)
            env.update(self.env)
            env["TF_CONFIG"] = tf_config(self.ports, index)
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            argv = [a.replace("{index}", str(index)) for a in self.command]
            log = open(self.log_path(index), "w")  # noqa: SIM115 (closed in _close_log)
            self._logs[index] = log
            self.processes[index] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return self

    def output(self, index):
        """Worker `index`'s log of the latest attempt."""
        path = self.log_path(index)
        if not os.path.exists(path):
            return ""
        with open(path, errors="replace") as f:
            return f.read()

    def poll(self):
        """Exit codes (None: still running)."""
        return [p.poll() if p is not None else None for p in self.processes]

    def wait(self, timeout):
        """Waits until every worker exits; raises `WorkerFailed` (with the logs'
        tails) if one fails or the time runs out (then all are killed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = self.poll()
            if any(c not in (None, 0) for c in codes):
                failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
                self.kill()
                raise WorkerFailed(self._message(f"worker(s) {failed} failed (exit {codes})"))
            if all(c == 0 for c in codes):
                self._close_logs()
                return codes
            time.sleep(0.2)
        self.kill()
        raise WorkerFailed(self._message(f"the cluster did not finish in {timeout} s"))

    def wait_for(self, predicate, timeout, what="the condition"):
        """Polls `predicate()` until true; raises `WorkerFailed` on time-out or if
        a worker exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if any(c is not None for c in self.poll()):
                raise WorkerFailed(self._message(f"a worker exited before {what}"))
            time.sleep(0.1)
        self.kill()
        raise WorkerFailed(self._message(f"{what} did not happen in {timeout} s"))

    def kill(self, index=None):
        """SIGKILLs worker `index` (default: all) and its children."""
        for i in range(self.num_workers) if index is None else [index]:
            process = self.processes[i]
            if process is not None and process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        if index is None:
            self._close_logs()

    def _close_logs(self):
        for i, log in enumerate(self._logs):
            if log is not None:
                log.close()
                self._logs[i] = None

    def _message(self, what):
        tails = []
        for i in range(self.num_workers):
            text = self.output(i)
            tails.append(f"--- worker {i} ({self.log_path(i)}):\n{text[-3000:]}")
        return what + "\n" + "\n".join(tails)

    def __enter__(self):
        if all(p is None for p in self.processes):
            self.start()
        return self

    def __exit__(self, *exc):
        self.kill()
        return False


def python_command(*args):
    """`[sys.executable, *args]`: the current interpreter (its virtualenv)."""
    return [sys.executable, *args]
