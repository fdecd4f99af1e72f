"""Train MemPoser: ``python train.py --config configs/train.yaml [section.key=value | --section.key value ...]``."""
from __future__ import annotations

import argparse
import logging
import sys

from memposer.training.config import load_config

TRAIN_EXTRA = ("pytorch_lightning", "lightning", "lightning_utilities", "torchmetrics", "wandb")  # setup.cfg [train]


def cli(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Examples: logger=none trainer.max_steps=100 --data.root data/synth")
    parser.add_argument("--config", default="configs/train.yaml", help="YAML training config")
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        conf = load_config(args.config, overrides)
        if args.print_config:
            import yaml  # noqa: PLC0415
            print(yaml.safe_dump(conf, sort_keys=False))
            return 0
        try:
            from memposer.training.run import main  # noqa: PLC0415 (heavy imports after parsing)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in TRAIN_EXTRA:
                raise ValueError(f"training needs {e.name}, which the [train] extra installs: "
                                 'pip install -e ".[train]"') from None
            raise
        main(conf)
    except (FileNotFoundError, ValueError, KeyError) as e:
        logging.getLogger("train").error("%s", e)
        logging.getLogger("train").debug("traceback", exc_info=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
