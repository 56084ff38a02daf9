"""Child processes with an owner: start in their own group, wait for readiness, stop by PID.

The launchers are synchronous on purpose: they run at start-up (CLI or a pytest session
fixture), where blocking is what we want, and plain `subprocess` keeps the process-group
handling explicit.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


class StartupError(RuntimeError):
    """An embedded server did not become ready; the message carries its log tail."""


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """Several distinct free ports, all held until every one is chosen."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def tcp_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def http_ok(url: str, *, verify: bool = False, headers: dict[str, str] | None = None) -> bool:
    """True when `url` answers 2xx within a second."""
    context = None
    if url.startswith("https://") and not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback URLs we built
    try:
        with urllib.request.urlopen(request, timeout=1.0, context=context) as response:  # noqa: S310
            return 200 <= int(response.status) < 300
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """A child process in its own process group, logging to a file.

    Started either by exec (`start`: any program) or by fork (`fork`: a Python function in
    a copy of this process, which skips the child's interpreter start-up and imports).
    """

    name: str
    popen: subprocess.Popen[bytes] | None
    log_path: Path
    _log: IO[bytes] | None = field(repr=False)
    _pid: int = 0
    _returncode: int | None = None
    # The signal that asks for a prompt, clean exit (PostgreSQL's is SIGINT: "fast" mode).
    stop_signal: signal.Signals = signal.SIGTERM

    @classmethod
    def start(
        cls,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> ManagedProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        popen = subprocess.Popen(  # noqa: S603 - argv is built by our launchers, never by users
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            # Drop fully to `user`: its uid, its group and no inherited supplementary groups.
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        return cls(name=name, popen=popen, log_path=log_path, _log=log, _pid=popen.pid)

    @classmethod
    def fork(cls, name: str, target: Callable[[], int | None], *, log_path: Path) -> ManagedProcess:
        """Run `target()` in a forked child (own session, output to `log_path`).

        Only fork from a process with no other threads running: the child gets a copy of
        one thread, and a lock another thread held would stay locked in it forever.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.setsid()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_DFL)
                fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = target() or 0
            except BaseException:  # noqa: BLE001 - the child reports and exits, never returns
                import traceback  # noqa: PLC0415

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        return cls(name=name, popen=None, log_path=log_path, _log=None, _pid=pid)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        if self._returncode is None:
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(self._pid, os.WNOHANG)
                if done:
                    self._returncode = os.waitstatus_to_exitcode(status)
        return self._returncode

    def alive(self) -> bool:
        return self.returncode is None

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left after `timeout`."""
        if self.alive():
            self._signal_group(self.stop_signal)
            if not self._wait(timeout):
                self._signal_group(signal.SIGKILL)
                self._wait(5)
        # Children that outlived the leader (a server's workers) still share its group.
        self._signal_group(signal.SIGKILL)
        if self._log is not None:
            self._log.close()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, sig)


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: ManagedProcess | None = None,
    interval: float = 0.05,
) -> None:
    """Poll `check` until it holds; fail fast with the log tail if `proc` dies."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if proc is not None and not proc.alive():
            raise StartupError(
                f"{what}: {proc.name} exited with {proc.returncode}\n{proc.log_tail()}"
            )
        if time.monotonic() > deadline:
            tail = proc.log_tail() if proc is not None else ""
            raise StartupError(f"{what}: not ready after {timeout:.0f}s\n{tail}")
        time.sleep(interval)
