"""Work that must not outlive its node: the children's records, and ending orphans at start.

Every command and agent leads its own session (one killpg reaches everything it started), which
also means that nothing ends it when the daemon itself is killed -9: the restarted node records
the directive as failed while the process goes on. Two defences:

1. ``PR_SET_PDEATHSIG`` (Linux): an agent's leader gets ``PDEATHSIG`` (SIGTERM) the moment the
   daemon thread that started it dies. It reaches the leader only, not what the leader started.
   Commands do not ask for it by default (commands.COMMAND_PDEATHSIG): it needs a preexec_fn,
   and so a full fork() of the daemon per start instead of a vfork (+3.3 ms of event-loop time
   per start at a 60 MB daemon); a command is ended by the next start instead.
2. A small record per live child in the node's data directory (``ChildTracker``): pgid, pid,
   the process start time, the boot id, a random tag that is also put into the child's
   environment (``CORTEX_CHILD_TAG``, inherited by everything it starts), the daemon's own pid and
   start time, and what the child is. ``reap_orphans`` runs when the node starts: for each record
   left by a daemon that is no longer running (same boot), it ends the leader's process group if
   the leader is still the same process, and every process that carries the record's tag in its
   environment (whatever group it moved to): SIGTERM, then SIGKILL after a grace period. It
   returns one line per record that still had processes, for the node's log and history.

Limits: a process that cleared or replaced its environment *and* left the group (or whose leader
died) cannot be told from an unrelated one and is left alone; records are only as durable as the
page cache (a reboot ends the processes anyway: records of another boot are dropped); tracking is
best-effort: if the record cannot be written (full or read-only disk) the work still runs, with a
warning. PDEATHSIG is tied to the *thread* that forked: ChildProcess starts children from the
event loop's thread, which lives as long as the daemon.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

log = logging.getLogger("cortex.children")

TAG_ENV = "CORTEX_CHILD_TAG"
PDEATHSIG = signal.SIGTERM  # what a child's leader gets when the daemon dies (Linux)
REAP_GRACE_S = 2.0  # between SIGTERM and SIGKILL when orphans are ended at start
RECORD_SUFFIX = ".json"
WHAT_MAX = 200  # characters of the description kept in a record
STALE_TMP_S = 60.0  # a half-written record older than this was cut off by a crash
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_PR_SET_PDEATHSIG = 1


# --- process identity -----------------------------------------------------------------------------
def boot_id() -> str:
    """This boot of the machine (Linux: the kernel's boot id; elsewhere: the boot time)."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return f"boot-{psutil.boot_time():.0f}"


def process_start(pid: int) -> str | None:
    """When ``pid`` started, as an opaque string that a reused pid never repeats (Linux: the
    start time in clock ticks since boot from /proc/<pid>/stat); None when there is no such
    process."""
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            return stat[stat.rindex(b")") + 2:].split()[19].decode()
        except (OSError, ValueError, IndexError):
            return None
    try:
        return repr(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _running(pid: int, start: str | None) -> bool:
    """``pid`` is the process that started at ``start`` and has not exited (a zombie has)."""
    if start is None or process_start(pid) != start:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


# --- PR_SET_PDEATHSIG -----------------------------------------------------------------------------
def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, never in a forked child
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    return prctl


_PRCTL = _load_prctl()


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` for subprocess.Popen that asks the kernel to send the child PDEATHSIG when
    the calling thread of this process dies; None where that does not exist (not Linux). It does
    only async-signal-safe work in the child: a prctl, a getppid, and a kill of itself if the
    daemon already died between fork and prctl."""
    if _PRCTL is None:
        return None
    prctl, parent, sig = _PRCTL, os.getpid(), int(PDEATHSIG)

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the daemon died before the prctl: act as if it had been set
            os.kill(os.getpid(), sig)

    return in_child


# --- records --------------------------------------------------------------------------------------
@dataclass
class ChildRecord:
    pid: int  # the leader; it leads its own session, so its pgid is its pid
    pgid: int
    start: str | None  # process_start(pid)
    boot_id: str
    tag: str  # CORTEX_CHILD_TAG in its environment
    what: str  # "execute_task dir_…: argv" / "agent agent_… (type) in session sess_…"
    node_pid: int  # the daemon that started it
    node_start: str | None
    recorded_at: float

    def to_doc(self) -> dict:
        return {"pid": self.pid, "pgid": self.pgid, "start": self.start, "bootId": self.boot_id, "tag": self.tag,
                "what": self.what, "nodePid": self.node_pid, "nodeStart": self.node_start,
                "recordedAt": self.recorded_at}

    @classmethod
    def from_doc(cls, doc: dict) -> ChildRecord:
        rec = cls(pid=doc["pid"], pgid=doc["pgid"], start=doc["start"], boot_id=doc["bootId"], tag=doc["tag"],
                  what=doc["what"], node_pid=doc["nodePid"], node_start=doc["nodeStart"],
                  recorded_at=doc["recordedAt"])
        if not (isinstance(rec.pid, int) and isinstance(rec.pgid, int) and rec.pid > 1 and rec.pgid > 1
                and isinstance(rec.tag, str) and len(rec.tag) >= 16 and isinstance(rec.node_pid, int)):
            raise ValueError("malformed child record")
        return rec


class ChildTracker:
    """One file per live child in ``state_dir`` (None: no tracking). Best-effort: a record that
    cannot be written is logged and the child runs anyway."""

    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = Path(state_dir).expanduser() if state_dir is not None else None
        self._node = (os.getpid(), process_start(os.getpid()))
        self._boot = boot_id() if state_dir is not None else ""
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.state_dir is not None

    def new_tag(self) -> str | None:
        return secrets.token_hex(16) if self.enabled else None

    def add(self, pid: int, tag: str | None, what: str) -> Path | None:
        """Record a child that has just been started (call it before anything can reap it, so
        that its start time can still be read). Returns the record's path, or None."""
        if self.state_dir is None or tag is None:
            return None
        rec = ChildRecord(pid=pid, pgid=pid, start=process_start(pid), boot_id=self._boot, tag=tag,
                          what=what[:WHAT_MAX], node_pid=self._node[0], node_start=self._node[1],
                          recorded_at=time.time())
        path = self.state_dir / f"child-{pid}-{tag[:12]}{RECORD_SUFFIX}"
        tmp = path.with_suffix(".tmp")
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(rec.to_doc()), encoding="utf-8")
            tmp.replace(path)  # a reader never sees half a record
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot record child processes in %s (%s): work left running by a crash will "
                            "not be ended at the next start", self.state_dir, exc.strerror or exc)
            with suppress(OSError):
                tmp.unlink()
            return None
        return path

    @staticmethod
    def remove(path: Path | None) -> None:
        if path is not None:
            with suppress(OSError):
                path.unlink()


# --- ending orphans at start ----------------------------------------------------------------------
def _read_records(state_dir: Path) -> list[tuple[Path, ChildRecord]]:
    try:
        entries = sorted(state_dir.iterdir())
    except OSError:  # no directory: nothing was ever recorded
        return []
    found = []
    for path in entries:
        if path.suffix != RECORD_SUFFIX:
            with suppress(OSError):  # cut off while being written (a live daemon's is seconds old)
                if path.suffix == ".tmp" and time.time() - path.stat().st_mtime > STALE_TMP_S:
                    path.unlink()
            continue
        try:
            found.append((path, ChildRecord.from_doc(json.loads(path.read_text(encoding="utf-8")))))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable child record %s: %s", path, exc)
            with suppress(OSError):
                path.unlink()
    return found


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _tagged(tags: dict[str, ChildRecord]) -> dict[str, list[psutil.Process]]:
    """Processes whose environment carries one of ``tags``, by tag."""
    found: dict[str, list[psutil.Process]] = {}
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            tag = proc.environ().get(TAG_ENV)
        except (psutil.Error, OSError):
            continue
        if tag in tags:
            found.setdefault(tag, []).append(proc)
    return found


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except OSError:
        return None


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        with suppress(psutil.Error):
            proc.send_signal(sig)  # psutil checks that the pid is still this process


async def _wait_gone(procs: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    end = time.monotonic() + seconds
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < end:
        await asyncio.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


async def reap_orphans(state_dir: Path | None, *, grace: float = REAP_GRACE_S) -> list[str]:
    """End what a previous run of this node left running, as recorded in ``state_dir`` (the
    ``state_dir`` given to AgentRuntime). Call it once at start, before any new work runs.
    Returns one line per recorded child that still had processes (empty: nothing was left);
    each line is also logged. Records of a daemon that is still running are left alone."""
    if state_dir is None:
        return []
    records = await asyncio.to_thread(_read_records, Path(state_dir).expanduser())
    if not records:
        return []
    boot, me = boot_id(), (os.getpid(), process_start(os.getpid()))
    orphaned: list[tuple[Path, ChildRecord]] = []
    for path, rec in records:
        if rec.boot_id != boot:  # the machine restarted since: nothing of it can still run
            ChildTracker.remove(path)
        elif (rec.node_pid, rec.node_start) == me or _running(rec.node_pid, rec.node_start):
            continue  # a live daemon's child (this one's, or another's on the same directory): not an orphan
        else:
            orphaned.append((path, rec))
    if not orphaned:
        return []

    def find() -> tuple[dict[str, list[psutil.Process]], list[int]]:
        victims = _tagged({rec.tag: rec for _, rec in orphaned})
        groups = []
        for _, rec in orphaned:
            if _running(rec.pid, rec.start):  # the leader is still the same process: its group is ours
                groups.append(rec.pgid)
                known = {p.pid for p in victims.get(rec.tag, [])}
                victims.setdefault(rec.tag, []).extend(p for p in _group_members(rec.pgid) if p.pid not in known)
        return victims, groups

    victims, groups = await asyncio.to_thread(find)
    everyone = list({p.pid: p for procs in victims.values() for p in procs}.values())
    for pgid in groups:  # the whole group at once, also what it started while we looked
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    in_groups = set(groups)
    _signal_all([p for p in everyone if _pgid(p) not in in_groups], signal.SIGTERM)
    stubborn = await _wait_gone(everyone, grace)
    if stubborn:
        _signal_all(stubborn, signal.SIGKILL)
        await _wait_gone(stubborn, 1.0)
    killed = {p.pid for p in stubborn}
    lines = []
    for path, rec in orphaned:
        procs = victims.get(rec.tag, [])
        if procs:
            pids = sorted(p.pid for p in procs)
            how = "SIGTERM" + (f", then SIGKILL after {grace:g} s" if killed & set(pids) else "")
            line = (f"ended {rec.what}: left running by the previous run of this node (pid {rec.node_pid}); "
                    f"{len(pids)} process(es), os pid(s) {', '.join(map(str, pids))} ({how})")
            log.warning("%s", line)
            lines.append(line)
        ChildTracker.remove(path)
    return lines
