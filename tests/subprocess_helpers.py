"""Run TensorFlow programs in child processes: logical CPU devices and multi-worker clusters
must be set up before TensorFlow initialises, i.e. in a fresh process.

- `run_python(code_or_path, args, env=None, timeout=300)`: one child, the package importable,
  the Keras flavour of the test run inherited; returns the `CompletedProcess`.
- `json_result(completed)`: the JSON payload a child printed on a line starting with `JSON`.
- `free_ports(n)`: n free TCP ports on 127.0.0.1.
- `LocalCluster`: n workers of a MultiWorkerMirroredStrategy job on 127.0.0.1 (TF_CONFIG
  per worker), each in its own process group, always killed on exit (a `with` block).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


def run_python(code=None, path=None, args=(), env=None, timeout=300):
    """Runs `python -c code` (or `python path args...`) in a child process."""
    command = [sys.executable, "-c", code] if code is not None else [sys.executable, path]
    return subprocess.run([*command, *args], env=child_env(env), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def json_result(completed):
    lines = [line for line in completed.stdout.splitlines() if line.startswith("JSON")]
    assert lines, f"rc={completed.returncode}\n{completed.stderr[-4000:]}"
    return json.loads(lines[-1][4:])


def free_ports(n):
    """n distinct free ports on 127.0.0.1 (bound then released: the usual race is
    acceptable for a test, and a clash shows as a failed start, not a wrong result)."""
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


class LocalCluster:
    """`num_workers` processes of one multi-worker job, bound to 127.0.0.1.

    Each worker runs `python script *args` with `TF_CONFIG` naming all workers on
    127.0.0.1 at free ports and its own index; `{rank}` in an argument becomes the worker
    index. Every worker gets its own session (process group), killed with SIGKILL when the
    `with` block exits, whatever happened, so that no worker outlives a failed test.

    Example:

    ```python
    with LocalCluster(script, ["--out", "w{rank}.json"]) as cluster:
        codes = cluster.wait(timeout=120)
    ```
    """

    def __init__(self, script, args=(), num_workers=2, env=None):
        self.script = script
        self.args = list(args)
        self.num_workers = num_workers
        self.env = env or {}
        self.procs = []
        self.logs = []

    def __enter__(self):
        ports = free_ports(self.num_workers)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        for rank in range(self.num_workers):
            tf_config = json.dumps({"cluster": cluster,
                                    "task": {"type": "worker", "index": rank}})
            log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in __exit__)
            self.logs.append(log)
            args = [a.replace("{rank}", str(rank)) for a in self.args]
            self.procs.append(subprocess.Popen(
                [sys.executable, self.script, *args], cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT, env=child_env({**self.env, "TF_CONFIG": tf_config}),
                start_new_session=True))
        return self

    def wait(self, timeout=180, ranks=None):
        """Waits for the workers (all, or `ranks`) and returns their exit codes; raises
        `TimeoutError` (with their logs) past `timeout` seconds."""
        deadline = time.monotonic() + timeout
        codes = []
        for rank in ranks if ranks is not None else range(self.num_workers):
            try:
                codes.append(self.procs[rank].wait(max(deadline - time.monotonic(), 0.1)))
            except subprocess.TimeoutExpired as error:
                raise TimeoutError(f"worker {rank} still running after {timeout}s\n"
                                   f"{self.output()}") from error
        return codes

    def kill(self, rank=None):
        """Kills the process group of one worker (or all)."""
        for r in [rank] if rank is not None else range(self.num_workers):
            proc = self.procs[r]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def output(self, tail=3000):
        texts = []
        for rank, log in enumerate(self.logs):
            log.flush()
            log.seek(0)
            lines = [line for line in log.read().splitlines()
                     if not line.startswith(("W0000", "I0000", "WARNING: All log"))]
            texts.append(f"--- worker {rank}:\n" + "\n".join(lines)[-tail:])
        return "\n".join(texts)

    def __exit__(self, *exc):
        self.kill()
        for log in self.logs:
            log.close()
        return False

