"""Run a container tool as an asyncio subprocess: stream its lines, bound its time, kill its tree.

Every adapter (buildah, skopeo, podman) goes through `run_tool`. The child gets its own
session (process group), so a timeout or a cancelled task stops the whole tree: SIGTERM to
the group and to every descendant that left it (buildah's chroot isolation starts build
steps in sessions of their own), SIGKILL after a grace period. The event loop is never
blocked: output is read in chunks and split into lines here, so a line of any length is
fine, and each line reaches the `log_sink` callback as soon as the tool prints it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.errors import EkibenError, TemporaryError, Unavailable

LogSink = Callable[[str], Awaitable[None]]
"""An async callback that receives each output line of a tool (no trailing newline)."""

DEFAULT_TAIL_LINES = 40
_CHUNK = 64 * 1024
_MAX_LINE = 256 * 1024  # a longer "line" (progress output without newlines) is cut here
_KILL_GRACE_SECONDS = 5.0


class ToolNotFound(Unavailable):
    """A container tool is not installed (or not where the settings say)."""


class ToolTimeout(TemporaryError):
    """A tool ran past its time limit and was killed (with every process it started)."""

    def __init__(self, message: str, *, tail: Sequence[str], seconds: float) -> None:
        super().__init__(message, reason="Timeout", details={"log_tail": list(tail)})
        self.tail = tuple(tail)
        self.seconds = seconds


@dataclass(frozen=True)
class ToolResult:
    """How a tool run ended. `stdout` is set only when captured separately."""

    argv: tuple[str, ...]
    returncode: int
    tail: tuple[str, ...]
    seconds: float
    stdout: bytes = b""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail_text(self) -> str:
        return "\n".join(self.tail)


def resolve_binary(name: str) -> str:
    """`name` as a path, or found on PATH; `ToolNotFound` otherwise."""
    if os.sep in name:
        if Path(name).is_file() and os.access(name, os.X_OK):
            return name
        raise ToolNotFound(f"{name} is not an executable file")
    found = shutil.which(name)
    if found is None:
        raise ToolNotFound(f"{name} not found on PATH (install it, e.g. apt-get install {name})")
    return found


async def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    time_limit: float,
    log_sink: LogSink | None = None,
    cwd: Path | None = None,
    capture_stdout: bool = False,
    tail_lines: int = DEFAULT_TAIL_LINES,
) -> ToolResult:
    """Run `argv` with `env` (on top of this process's environment) until it exits.

    Without `capture_stdout`, stdout and stderr are one stream: every line goes to
    `log_sink` and the last `tail_lines` are kept in the result. With it, stdout is returned
    whole (for JSON output) and only stderr is streamed. A non-zero exit is returned, not
    raised: callers know what a failure means. Raises `ToolNotFound` when the binary is
    missing and `ToolTimeout` after killing a run that exceeded `timeout`; a cancelled
    caller kills the run too before the `CancelledError` propagates.
    """
    binary = resolve_binary(argv[0])
    began = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    try:
        proc = await asyncio.create_subprocess_exec(
            binary,
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise ToolNotFound(f"cannot run {binary}: {exc}") from exc

    async def emit(line: str) -> None:
        tail.append(line)
        if log_sink is not None:
            await log_sink(line)

    assert proc.stdout is not None
    lines_from = proc.stderr if capture_stdout else proc.stdout
    assert lines_from is not None
    captured = bytearray()

    async def collect() -> int:
        readers = [_read_lines(lines_from, emit)]
        if capture_stdout:
            assert proc.stdout is not None
            readers.append(_read_all(proc.stdout, captured))
        await asyncio.gather(*readers)
        return await proc.wait()

    try:
        returncode = await asyncio.wait_for(collect(), time_limit)
    except TimeoutError:
        await asyncio.shield(_kill_tree(proc))
        seconds = time.monotonic() - began
        raise ToolTimeout(
            f"{Path(binary).name} {argv[1] if len(argv) > 1 else ''} timed out after "
            f"{seconds:.0f}s and was killed; last lines:\n" + "\n".join(tail),
            tail=tuple(tail),
            seconds=seconds,
        ) from None
    except BaseException:
        # Cancelled, or the log sink raised: the tool must not outlive its caller.
        await asyncio.shield(_kill_tree(proc))
        raise
    return ToolResult(
        argv=tuple(argv),
        returncode=returncode,
        tail=tuple(tail),
        seconds=time.monotonic() - began,
        stdout=bytes(captured),
    )


async def _read_lines(stream: asyncio.StreamReader, emit: Callable[[str], Awaitable[None]]) -> None:
    pending = b""
    while chunk := await stream.read(_CHUNK):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            await emit(raw.rstrip(b"\r").decode(errors="replace"))
        if len(pending) > _MAX_LINE:
            await emit(pending.decode(errors="replace"))
            pending = b""
    if pending:
        await emit(pending.rstrip(b"\r").decode(errors="replace"))


async def _read_all(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(_CHUNK):
        into += chunk


def _descendants(root: int) -> list[int]:
    """Every live descendant of `root`, found through /proc (children first)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        children[int(fields[1])].append(int(entry.name))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found[::-1]


async def _kill_tree(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the group and its strays, SIGKILL what is left after the grace period.

    Descendants are listed while the leader lives: once it exits they are re-parented and
    no longer found through it.
    """
    strays = _descendants(proc.pid) if proc.returncode is None else []
    if proc.returncode is None:
        _signal_all(proc.pid, strays, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), _KILL_GRACE_SECONDS)
    if proc.returncode is None:
        strays += _descendants(proc.pid)
    # The leader may be gone while its group (or a step in its own session) lives on.
    _signal_all(proc.pid, strays, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await proc.wait()


def _signal_all(leader: int, others: Sequence[int], sig: signal.Signals) -> None:
    for target in others:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)


def failure(message: str, result: ToolResult) -> EkibenError:
    """A plain `EkibenError` (temporary: status 500) carrying the tool's last lines."""
    return EkibenError(
        f"{message} (exit {result.returncode}); last lines:\n{result.tail_text()}",
        details={"exit_code": result.returncode, "log_tail": list(result.tail)},
    )
