"""Train a model with Horovod on Spark, tracked in MLflow.

    spark-submit --master spark://HOST:7077 jobs/train.py \
        --model vae --data /data/parquet/celeba --workers 2 [--resume] [--env ENV] [--set k=v]

Same arguments as ``sparkvision train``.
"""

import sys

from sparkvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
