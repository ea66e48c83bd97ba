"""Run a real Azurite blob service for tests and demos.

Storage code is tested against Azurite rather than mocks, because what matters (ETag conditions, block
commits, ranged GETs, listing order) is exactly what a mock would get wrong. Azurite comes from npm
(package.json pins the version; ``make test`` runs ``npm ci``); this module only starts and stops it.

    proc = start_azurite(tmp_dir)          # free loopback port, workspace in tmp_dir
    try:
        service = BlobServiceClient.from_connection_string(proc.connection_string)
        ...
    finally:
        proc.stop()

``AzuriteProcess`` is also a context manager, and stops itself at interpreter exit as a last resort.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BLOB = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"

ACCOUNT_NAME = "devstoreaccount1"
# The well-known development key, published in Azurite's and Azure's documentation; not a secret.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# Flags of azurite-blob 3.37 (see `azurite-blob --help`):
#   --skipApiVersionCheck  the Python SDK may speak a newer REST API version than this Azurite knows
#   --disableTelemetry     tests must not phone home
#   --loose                ignore headers/parameters Azurite does not implement instead of failing
#   --silent               no access log on stdout
FLAGS = ("--skipApiVersionCheck", "--disableTelemetry", "--loose", "--silent")

STARTUP_TIMEOUT = 30.0


class AzuriteNotInstalledError(RuntimeError):
    """node_modules has no Azurite: the npm dev dependencies were never installed."""


class AzuriteProcess:
    """A running ``azurite-blob``; :meth:`stop` ends it (idempotent)."""

    def __init__(self, process: subprocess.Popen[bytes], *, port: int, workdir: Path, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.workdir = workdir
        self.log_path = log_path
        self.blob_endpoint = f"http://127.0.0.1:{port}/{ACCOUNT_NAME}"
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )
        atexit.register(self.stop)

    def stop(self) -> None:
        """Terminate, then kill if Azurite does not exit within 5 s."""
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_tail(self, limit: int = 4000) -> str:
        """The end of Azurite's stdout/stderr, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def __enter__(self) -> AzuriteProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"AzuriteProcess(pid={self.process.pid}, endpoint={self.blob_endpoint!r})"


def _die_with_parent() -> None:
    """Linux, in the child before exec: SIGTERM Azurite when its parent dies, even by SIGKILL.

    atexit does not run when a test session is killed; without this, Azurite would outlive it. (The signal
    follows the thread that started Azurite, so call start_azurite from a thread that lives as long.)
    """
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    """A port free right now on loopback; Azurite binds it a moment later (start_azurite retries a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    """True once Azurite answers HTTP at all (an unauthenticated request gets an error status: fine)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", f"/{ACCOUNT_NAME}?comp=list")
        conn.getresponse().read()
        return True
    except OSError:  # refused while Node starts, or reset
        return False
    finally:
        conn.close()


def start_azurite(
    workdir: str | Path, *, timeout: float = STARTUP_TIMEOUT, flags: Sequence[str] = FLAGS
) -> AzuriteProcess:
    """Start ``azurite-blob`` on a free loopback port, workspace in ``workdir``; wait until it answers.

    Raises AzuriteNotInstalledError when node_modules lacks Azurite, RuntimeError when it does not come up.
    """
    if not os.access(AZURITE_BLOB, os.X_OK):
        raise AzuriteNotInstalledError(
            f"Azurite is not installed ({AZURITE_BLOB} is missing): run `make test`, which runs `npm ci` "
            "to install the pinned Azurite from package.json"
        )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # another process may grab the port between _free_port() and the bind
        port = _free_port()
        log_path = workdir / f"azurite-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    str(AZURITE_BLOB),
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    str(port),
                    "--location",
                    str(workdir),
                    *flags,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        azurite = AzuriteProcess(process, port=port, workdir=workdir, log_path=log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _answers(port):
                return azurite
            time.sleep(0.1)
        azurite.stop()
        last_error = f"exit code {process.returncode}; log:\n{azurite.log_tail()}"
        if "EADDRINUSE" not in last_error:
            break
    raise RuntimeError(f"Azurite did not start within {timeout:.0f} s ({last_error})")


if __name__ == "__main__":  # manual use: python -m tests.azurite [workdir]
    import tempfile

    # SIGTERM (timeout, a supervisor) unwinds like Ctrl-C, so the with-blocks stop Azurite and clean up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    with contextlib.ExitStack() as stack:
        folder = sys.argv[1] if len(sys.argv) > 1 else stack.enter_context(tempfile.TemporaryDirectory())
        with start_azurite(folder) as running:
            print(running.connection_string, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                running.process.wait()
