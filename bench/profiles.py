"""Summaries of py-spy's collapsed stacks (``record --format raw --threads [--native]``): where the
busy time of a node goes.

A line is ``thread (TID): NAME;frame;...;leaf COUNT`` with frames like ``func (pkg/module.py:LINE)``
and, with ``--native``, C frames like ``uv__io_poll (linux.c:1546)`` or ``0x7f.. (libc.so.6)``.

Idle samples are left out of the busy total: the event loop waiting in epoll (asyncio's select or
uvloop's ``uv__io_poll``), aiosqlite's worker waiting for work, any thread blocked on a lock.
Each busy sample is charged to one place: the garbage collector, the SQLite library, a system
call (socket and file I/O), uvloop's own C code, or else the innermost Python frame (its module
for ``self_by_area``, the function for ``self_top``). ``inclusive_cortex`` is the share of samples
a cortex_node function is on the stack for (itself and what it calls): the hot paths of ours.
Without ``--native`` the C part is invisible and a sample that stops at ``Runner.run`` (uvloop's
C loop) cannot be placed: it is reported as such.
"""

from __future__ import annotations

import linecache
import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# wrappers whose inclusive share is simply "the whole request": not a hot spot of their own
_WRAPPERS = ("main_command", "main (cli", "<module> (cli", "run_node (app.py)", "error_middleware", "auth (api/http.py)",
             "make_auth_middleware", "make_rate_limit_middleware.<locals>.rate_limit", "browser_guard (api/http.py)",
             "body_deadline_middleware (api/http.py)", "connection_tracking_middleware (api/http.py)")
_LOCK_WAITS = ("pthread_cond_timedwait", "pthread_cond_wait", "PyThread_acquire_lock_timed", "sem_timedwait",
               "sem_wait", "take_gil")
_SYSCALLS = {"read", "write", "writev", "readv", "pwrite64", "pread64", "pwrite", "pread", "send", "sendto", "sendmsg",
             "recv", "recvfrom", "recvmsg", "fsync", "fdatasync", "epoll_ctl", "close", "accept4", "openat", "fstat",
             "lseek", "ftruncate", "fcntl", "unlink", "stat", "newfstatat", "getrandom", "clock_gettime"}

GC = "garbage collector (gc_collect)"
SQLITE = "SQLite C library"
SYSCALL = "system calls (socket and file I/O)"
UVLOOP = "uvloop C event loop (libuv, transports)"
CUT = "(unattributed: stack cut at the event loop; profile with --native)"


def _frames(stack: str) -> list[tuple[str, str, str]]:
    out = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw.strip())
        out.append((m["func"], m["file"], m["line"] or "") if m else (raw.strip(), "", ""))
    return out


def _is_python(file: str) -> bool:
    return file.endswith(".py") or file.startswith("<frozen")


def area(file: str) -> str:
    f = file.replace("\\", "/")
    if "cortex_node/" in f:
        return "cortex_node." + f.split("cortex_node/", 1)[1].removesuffix(".py").replace("/", ".")
    if "cortex_tui/" in f:
        return "cortex_tui." + f.split("cortex_tui/", 1)[1].removesuffix(".py").replace("/", ".")
    for name in ("aiohttp", "aiosqlite", "asyncio", "json", "psutil", "sqlite3", "logging", "yarl", "multidict",
                 "typing", "dataclasses", "enum", "uuid", "secrets", "random", "datetime", "re", "textual", "rich"):
        if f.startswith(name + "/") or f == name + ".py" or f"/{name}/" in f:
            return name
    return f.split("/", 1)[0].removesuffix(".py") or "?"


def _aiosqlite_waiting(func: str, line: str) -> bool:
    """aiosqlite's worker blocked on its queue (``tx.get()``) is idle, not work."""
    if func != "_connection_worker_thread" or not line:
        return False
    try:
        import aiosqlite.core

        return "tx.get()" in linecache.getline(aiosqlite.core.__file__, int(line))
    except (ImportError, ValueError):
        return False


def _classify(frames: list[tuple[str, str, str]]) -> tuple[bool, str, str]:
    """(idle?, area, self label) of one stack."""
    py_idx = [i for i, (_, file, _) in enumerate(frames) if _is_python(file)]
    last_py = py_idx[-1] if py_idx else -1
    tail = frames[last_py + 1:]
    tail_funcs = [f for f, _, _ in tail]
    if last_py >= 0:
        func, file, line = frames[last_py]
        if _aiosqlite_waiting(func, line):
            return True, "", ""
        if func.endswith("select") and file.startswith("selectors"):
            return True, "", ""
        if func == "BaseEventLoop._run_once" and not tail:
            return True, "", ""
    if any(f in _LOCK_WAITS for f in tail_funcs):
        return True, "", ""
    if "uv__io_poll" in tail_funcs:
        after = tail[tail_funcs.index("uv__io_poll") + 1:]
        if all(file.startswith("libc") or "epoll" in func for func, file, _ in after):
            return True, "", ""  # uvloop waiting in epoll
    if any("gc_collect" in f for f in tail_funcs):
        return False, GC, GC
    if any(file.startswith("libsqlite3") or func.startswith("sqlite3") for func, file, _ in tail):
        return False, SQLITE, SQLITE
    if tail and tail[-1][0] in _SYSCALLS:
        return False, SYSCALL, SYSCALL
    if last_py < 0:
        return False, "native (no Python frame)", "native (no Python frame)"
    func, file, line = frames[last_py]
    if func == "Runner.run" and file.endswith("asyncio/runners.py"):
        if tail:
            return False, UVLOOP, UVLOOP
        return False, CUT, CUT
    return False, area(file), f"{func} ({file}:{line})"


def summarize(path: Path, top: int = 12) -> dict[str, Any]:
    threads: Counter[str] = Counter()
    self_area: Counter[str] = Counter()
    self_func: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    busy = idle = 0
    native = False
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        thread = "?"
        if stack.startswith("thread ("):
            head, _, stack = stack.partition(";")
            name = head.split(":", 1)[1].strip() if ":" in head else head
            thread = "aiosqlite worker" if "_connection_worker_thread" in name else (
                "event loop (main)" if name == "MainThread" else name)
        frames = _frames(stack)
        if not frames:
            continue
        native = native or any(not _is_python(file) and file for _, file, _ in frames)
        is_idle, where, label = _classify(frames)
        if is_idle:
            idle += count
            continue
        busy += count
        threads[thread] += count
        self_area[where] += count
        self_func[label] += count
        seen = set()
        for func, file, _line in frames:
            if "cortex_node/" in file:
                key = f"{func} ({file.split('cortex_node/', 1)[1]})"
                if key not in seen:
                    seen.add(key)
                    incl[key] += count

    def share(counter: Counter[str], n: int = top) -> list[dict[str, Any]]:
        return [{"what": k, "pct": round(100.0 * v / busy, 1)} for k, v in counter.most_common(n)] if busy else []

    incl_filtered = Counter({k: v for k, v in incl.items() if not k.startswith(_WRAPPERS)})
    return {
        "samples_busy": busy, "samples_idle": idle, "native": native,
        "threads": share(threads, 5),
        "self_by_area": share(self_area),
        "inclusive_cortex": share(incl_filtered, top + 4),
        "self_top": share(self_func),
    }
