"""Promote a candidate model version to champion only when it wins on the pinned test split.

    spark-submit --master spark://HOST:7077 jobs/promote.py --model sparkvision-attributes

Same arguments as ``sparkvision promote``; exit code 0 promoted, 3 kept the champion.
"""

import sys

from sparkvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["promote", *sys.argv[1:]]))
