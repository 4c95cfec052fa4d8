"""Progress on a terminal: a bar with percentage, rate and ETA while a capture file of
known size is read, then a line saying the analysis after the reading is running.

The reading is not touched: a thread polls, four times a second, how far the reader's
file descriptor has got (``/proc/PID/fdinfo``, for this process and the forked workers
of a sharded analysis, which each read the whole file).  For a gzipped capture that is
the position in the compressed file, which is what its size counts.  Where /proc is not
there (not Linux) or the size is unknown (stdin), the caller keeps the packet count.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path
from typing import IO, Any

POLL = 0.25  # seconds between updates: negligible next to the reading


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(k) for k in task.read_text().split()]
        except OSError:
            pass
    return kids


def read_position(target: os.stat_result, pid: int | None = None) -> int | None:
    """The furthest offset any descriptor open on ``target`` has reached, in this process
    and its children; None when no descriptor is open on it (not yet, or any more)."""
    pid = pid or os.getpid()
    best: int | None = None
    for p in (pid, *_children(pid)):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{p}/fd/{fd}")
                if (st.st_dev, st.st_ino) != (target.st_dev, target.st_ino):
                    continue
                with open(f"/proc/{p}/fdinfo/{fd}") as info:
                    pos = int(info.readline().split()[1])  # "pos:\t<offset>"
            except (OSError, ValueError, IndexError):
                continue
            best = pos if best is None else max(best, pos)
    return best


class FileProgress:
    """``with FileProgress(path):`` around the analysis of one capture file."""

    def __init__(self, path: str, stream: IO[str] | None = None) -> None:
        self.path = path
        self.stream = stream or sys.stderr
        self.target = os.stat(path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.bar: Any = None
        self.analysing = False

    @staticmethod
    def usable(path: str, stream: IO[str] | None = None) -> bool:
        """A terminal, a regular file of known size, and /proc to watch the reader in."""
        stream = stream or sys.stderr
        return (bool(getattr(stream, "isatty", lambda: False)()) and path != "-"
                and os.path.isfile(path) and os.path.getsize(path) > 0
                and os.path.isdir("/proc/self/fdinfo"))

    def __enter__(self) -> FileProgress:
        from tqdm import tqdm

        # a terminal that reports no width (0 columns) would get an empty bar
        cols = shutil.get_terminal_size((80, 24)).columns or 80
        self.bar = tqdm(total=self.target.st_size, unit="B", unit_scale=True,
                        unit_divisor=1024, desc="pcapsmtp: reading", file=self.stream,
                        mininterval=POLL, leave=False, ncols=min(cols, 100))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * POLL + 1)
        if self.bar is not None:
            self.bar.close()
        self.stream.write("\r\033[K")
        self.stream.flush()

    def _run(self) -> None:
        seen = False
        while not self._stop.wait(POLL):
            pos = read_position(self.target)
            if pos is not None:
                seen = True
                self.bar.update(max(0, pos - self.bar.n))
            if seen and (pos is None or pos >= self.target.st_size):
                self._analysing()
                return

    def _analysing(self) -> None:
        """The file is read: what follows (closing sessions, rules, spooling) has no
        byte count, so say it is running rather than leave a full bar standing still."""
        self.bar.update(self.target.st_size - self.bar.n)
        self.bar.close()
        self.bar = None
        self.analysing = True
        self.stream.write("\r\033[Kpcapsmtp: file read; analysing the sessions ...")
        self.stream.flush()
