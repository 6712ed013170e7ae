"""Score images with a registered model into Parquet with lineage.

    spark-submit --master spark://HOST:7077 jobs/score.py \
        --model-uri models:/sparkvision-attributes@champion --input /data/new --output /data/scores

Same arguments as ``sparkvision score``.
"""

import sys

from sparkvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
