"""The work folder: one run at a time, and enough free space before a dataset starts.

Two runs writing the same HDF5 caches and database would corrupt them: the lock is ``flock`` on
``<work>/.lock``, which the kernel drops when the process dies (even by ``kill -9``), so a killed
run never leaves a stale lock behind. HDF5 can crash the process (a segmentation fault, seen with
h5py on a full tmpfs) when a write meets a full disk, so space is checked before each dataset.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
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


def bytes_needed(n_images: int, max_keypoints: int) -> int:
    """A generous estimate of one dataset's caches: features (a 128-d fp16 descriptor, position and
    score per keypoint), matches and the COLMAP database (about the same again), models."""
    return n_images * (2 * max_keypoints * 270 + 200_000)


def check_free_space(work: Path | str, n_images: int, max_keypoints: int) -> None:
    """``OSError(ENOSPC)`` with the numbers when ``work`` lacks the space a dataset's caches need."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    free, need = shutil.disk_usage(work).free, bytes_needed(n_images, max_keypoints)
    if free < need:
        raise OSError(errno.ENOSPC, f"only {free / 2**20:.1f} MiB free under the work folder {work}, about "
                                    f"{need / 2**20:.0f} MiB needed for {n_images} images; free some space or "
                                    f"pass --work on a larger disk")
