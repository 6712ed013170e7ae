"""Ingest a data set into Parquet.

    spark-submit --master spark://HOST:7077 jobs/ingest.py \
        --format celeba --input /data/celeba --output /data/parquet/celeba [--env ENV] [--set k=v]

Same arguments as ``sparkvision ingest``.
"""

import sys

from sparkvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
