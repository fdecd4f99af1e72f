"""One run per work folder: two runs writing the same HDF5 caches and database would corrupt them.

The lock is ``flock`` on ``<work>/.lock``: the kernel drops it when the process dies (even by
``kill -9``), so a killed run never leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from memposer.pipeline.checks import UsageError


@contextmanager
def work_lock(work: Path | str) -> Iterator[Path]:
    """Hold the work folder's lock for the duration of the block; ``UsageError`` if another run has it."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    f = open(work / ".lock", "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "another process"
            raise UsageError(f"--work {work} is in use by another run ({owner}); wait for it to finish "
                             f"or pass another --work") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        yield work
    finally:
        f.close()  # closing the file releases the lock
