"""Write a synthetic data set in a public on-disk format (runs on the driver only).

    spark-submit jobs/generate.py celeba --out /data/celeba --count 5000 --seed 0

Same arguments as ``sparkvision generate``.
"""

import sys

from sparkvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
