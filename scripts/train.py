"""GRPO training: ``accelerate launch scripts/train.py --config RECIPE.yaml [--field value ...]``."""

import sys

from grpo.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))  # configuration errors: one line, exit status 2
