"""Rehearse the Kaggle run here: a Kaggle-like venv, install from the bundle only, execute the notebook.

Lays out ``WORK/kaggle/input/memposer-bundle``, ``WORK/kaggle/input/image-matching-challenge-2025``
(symlinks) and ``WORK/kaggle/working`` like Kaggle's mounts, points the notebook's top cell at them
through its ``MEMPOSER_*`` environment variables, and executes it headless with nbclient on a
kernel that runs the venv's Python. The executed notebook is saved next to the submission.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from memposer.kaggle.venv import KaggleLikeVenv, clean_pip_env, make_kaggle_like_venv

log = logging.getLogger(__name__)

KERNEL = "memposer-kaggle"


@dataclass
class Rehearsal:
    submission: Path
    executed_notebook: Path
    seconds: float  # notebook execution only


def _kernel_manager(v: KaggleLikeVenv, root: Path):
    """A kernel manager that starts the venv's Python (kernelspec in a private folder)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = root / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(v.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "memposer Kaggle rehearsal", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(root)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)


def rehearse(notebook: Path, bundle: Path, competition: Path, work: Path, env: Optional[Dict[str, str]] = None,
             timeout_s: int = 1800, venv: Optional[KaggleLikeVenv] = None) -> Rehearsal:
    """Run ``notebook`` as Kaggle would, with ``bundle`` and ``competition`` mounted under ``work/kaggle/input``.

    ``env`` adds ``MEMPOSER_*`` settings for the notebook's top cell (budget, config, pipeline...).
    A failing cell raises ``nbclient.exceptions.CellExecutionError``; the executed notebook is saved anyway.
    """
    import nbclient
    import nbformat

    work = Path(work)
    inp, out = work / "kaggle" / "input", work / "kaggle" / "working"
    out.mkdir(parents=True, exist_ok=True)
    mounts = {"memposer-bundle": Path(bundle), "image-matching-challenge-2025": Path(competition)}
    for name, src in mounts.items():
        (inp / name).parent.mkdir(parents=True, exist_ok=True)
        if not (inp / name).exists():
            (inp / name).symlink_to(src.resolve(), target_is_directory=True)
    venv = venv or make_kaggle_like_venv(work / "venv")
    kernel_env = clean_pip_env()
    kernel_env.update(MEMPOSER_BUNDLE=str(inp / "memposer-bundle"), MEMPOSER_WORK=str(work / "tmp"),
                      MEMPOSER_COMPETITION=str(inp / "image-matching-challenge-2025"),
                      MEMPOSER_OUTPUT=str(out / "submission.csv"), **(env or {}))
    nb = nbformat.read(str(notebook), as_version=4)
    km = _kernel_manager(venv, work / "kernels")
    client = nbclient.NotebookClient(nb, km=km, timeout=timeout_s, resources={"metadata": {"path": str(out)}})
    executed = out / "executed_notebook.ipynb"
    t0 = time.time()
    try:
        client.execute(env=kernel_env)
    finally:
        nbformat.write(nb, str(executed))
        if km.has_kernel:  # nbclient leaves a kernel it did not start itself running
            km.shutdown_kernel(now=False)
    seconds = time.time() - t0
    log.info("notebook executed in %.1f s; submission %s", seconds, out / "submission.csv")
    return Rehearsal(out / "submission.csv", executed, seconds)


def notebook_text(path: Path) -> str:
    """Everything the cells of an executed notebook printed (for logs and tests)."""
    import nbformat

    chunks = []
    for cell in nbformat.read(str(path), as_version=4).cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                chunks.append(o.get("text", ""))
            elif o.get("output_type") in ("execute_result", "display_data"):
                chunks.append(o.get("data", {}).get("text/plain", ""))
            elif o.get("output_type") == "error":
                chunks.append("\n".join(o.get("traceback", [])))
    return "".join(chunks)
