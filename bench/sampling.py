"""Measuring a step: its wall time, and the peak memory of the process tree it runs in.

``Sample`` is one measurement; ``run_tree`` runs a command (or a bash pipeline) while a
``TreeSampler`` thread sums the PSS of the process and its descendants every 10 ms;
``python_child`` and ``manage`` run a fresh Python with Django (start-up included);
``timed`` measures a call inside the bench's own process (no memory).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
from startup import MB, ROOT, TMP


@dataclass
class Sample:
    """One measurement of one row: seconds, and where measured the peak memory, output size and notes."""

    seconds: float
    peak: int | None = None  # bytes: max of the summed PSS of the measured process tree
    size: int | None = None  # bytes of output
    notes: dict = field(default_factory=dict)


class TreeSampler(threading.Thread):
    """Samples the memory of process ``pid`` and all its descendants every 10 ms; keeps the max sum.

    The memory of a process is its PSS (a page shared by N processes counts 1/N to each):
    summed over the tree it is the tree's real footprint. RSS counted twice the pages a
    forked child shares with its parent until it execs (pg_dump, pg_restore), which showed as
    a lone "python" twice the size of the process.
    """

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()
        self.parts: dict[str, int] = {}  # at the peak: PSS by process name (summed per name)

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            parts: dict[str, int] = {}
            with contextlib.suppress(psutil.Error):
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        name = proc.name()
                        parts[name] = parts.get(name, 0) + proc.memory_full_info().pss
            total = sum(parts.values())
            if total > self.peak:
                self.peak, self.parts = total, parts
            self.done.wait(0.01)


def run_tree(args: list[str] | str, *, shell: bool = False, env: dict | None = None, stdout=None) -> Sample:
    """Run a command (a bash pipeline when ``shell``); its wall time and process-tree peak memory (PSS)."""
    if shell:
        args = ["bash", "-o", "pipefail", "-c", args]
    err = (TMP / "stderr").open("w+b")
    start = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=stdout or subprocess.PIPE, stderr=err, start_new_session=True
    )
    sampler = TreeSampler(proc.pid)
    sampler.start()
    try:
        out, _ = proc.communicate()
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    finally:
        sampler.done.set()
        sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        err.seek(0)
        raise RuntimeError(f"{args!r} exited with {proc.returncode}: {err.read().decode(errors='replace')[-1500:]}")
    err.close()
    by_process = " ".join(f"{name} {rss / MB:.0f}" for name, rss in sorted(sampler.parts.items(), key=lambda p: -p[1]))
    return Sample(
        seconds,
        peak=sampler.peak,
        notes={"stdout": (out or b"").decode(errors="replace"), "peak MiB by process": by_process},
    )


def python_child(code: str, env: dict | None = None) -> Sample:
    """A fresh Python with Django set up runs ``code`` (its wall time includes Django's start-up)."""
    prelude = "import django; django.setup()\n"
    return run_tree([sys.executable, "-c", prelude + code], env=env)


def manage(*args: str, env: dict | None = None) -> Sample:
    """``manage.py *args`` in a fresh process, measured by ``run_tree``."""
    return run_tree([sys.executable, "manage.py", *args], env=env)


def timed(fn: Callable[[], object]) -> Sample:
    """The wall time of ``fn()`` in this process; a dict it returns becomes the notes."""
    start = time.perf_counter()
    result = fn()
    sample = Sample(time.perf_counter() - start)
    if isinstance(result, dict):
        sample.notes.update(result)
    return sample
