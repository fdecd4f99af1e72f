"""Inference stages, one module each, from images to submission.csv."""
