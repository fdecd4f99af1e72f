"""Diagnostics people look at: per-image registration tables, aligned camera plots, cluster confusion,
pair graphs and cluster thumbnails, tied together by one ``index.html``.

    python -m memposer.report --labels train_labels.csv --thresholds train_thresholds.csv submission.csv --out report/

From code (the pipeline's ``--report``): :func:`write_report`.
"""
from memposer.report.build import write_report

__all__ = ["write_report"]
