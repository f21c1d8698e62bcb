"""GRPO training: ``accelerate launch scripts/train.py --config RECIPE.yaml [--field value ...]``."""

import sys

from grpo.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
