"""Serve a saved model with ``transformers serve`` on 127.0.0.1: the learned judge of notebook 01 (issue 19).

``transformers serve`` is an OpenAI-compatible server; the kit asks it through :class:`rlrf_nb.llm_judge.LLMJudge`
and its HTTP transport, like any other judge URL. This module only starts the command, waits until ``/health``
answers, and stops it with everything it started::

    with ModelServer("runs/judge/judge/judge", "runs/judge/serve") as srv:
        recipe.feedback.judge_url = srv.base_url      # http://127.0.0.1:<port>/v1
        ...

The same server from a shell (what this runs)::

    transformers serve --host 127.0.0.1 --port 8000 --device cpu runs/judge/judge/judge
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# The server dies with the process that started it (Linux: PR_SET_PDEATHSIG), so a killed notebook leaves no server.
_LAUNCH = ("import ctypes, os, signal, sys\n"
           "try: ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
           "except (AttributeError, OSError): pass\n"
           "os.execv(sys.argv[1], sys.argv[1:])")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(model: str | Path, port: int, device: str = "cpu", extra: list[str] = ()) -> list[str]:
    """The ``transformers serve`` command line for ``model`` (a saved directory or a Hub id) on 127.0.0.1, with
    ``extra`` options (e.g. ``--continuous-batching``)."""
    exe = Path(sys.executable).parent / "transformers"
    return [str(exe) if exe.exists() else "transformers", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--device", device, *extra, str(model)]


class ModelServer:
    """``transformers serve`` of one model on 127.0.0.1; its output goes to ``log_dir/serve-<n>.log``.

    :meth:`start` waits for ``/health`` and returns the seconds that took, or raises with the log's tail when the
    server exits or is not healthy within ``timeout``. :meth:`stop` ends the server and every process it started.
    """

    def __init__(self, model: str | Path, log_dir: str | Path, port: int | None = None, device: str = "cpu",
                 env: dict | None = None, extra: list[str] = ()):
        self.model, self.log_dir, self.device, self.extra = str(model), Path(log_dir), device, list(extra)
        self.port = port or free_port()
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                    **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 120) -> float:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log_path = self.log_dir / f"serve-{self.starts}.log"
        t0 = time.monotonic()
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, *serve_command(self.model, self.port,
                                                                                        self.device, self.extra)],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        while not self.healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve of {self.model} exited with {self.proc.returncode}; "
                                   f"{log_path} ends:\n{log_path.read_text(errors='replace')[-3000:]}")
            if time.monotonic() - t0 > timeout:
                self.kill()
                raise RuntimeError(f"transformers serve of {self.model} not healthy on port {self.port} after "
                                   f"{timeout} s; {log_path} ends:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.25)
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL the server's process group (it runs in its own session)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None

    stop = kill

    def __enter__(self) -> ModelServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
