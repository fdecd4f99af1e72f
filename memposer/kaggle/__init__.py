"""Kaggle: an offline bundle (wheels, checkpoints, manifest), the notebook's runner, local rehearsals.

``python -m memposer.kaggle bundle --out DIR`` builds the folder to upload as a Kaggle dataset;
``notebooks/kaggle_submission.ipynb`` installs from it and calls :func:`run_competition`;
``python -m memposer.kaggle rehearse`` runs that notebook here in a Kaggle-like venv.
"""
from memposer.kaggle.runner import DatasetResult, format_summary, run_competition

__all__ = ["run_competition", "format_summary", "DatasetResult"]
