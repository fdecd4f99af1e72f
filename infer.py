"""Competition folder -> submission.csv: ``python infer.py --data DIR --out submission.csv [--config ...]``.

See ``python infer.py --help``; the pipeline lives in ``memposer.pipeline``.
"""
import sys

from memposer.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
