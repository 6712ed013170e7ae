"""Inspect whole fabric images of any size: tiles scored in Spark, stitched heatmaps, defect boxes.

    spark-submit --master spark://HOST:7077 jobs/inspect_images.py \
        --model-uri models:/sparkvision-fabric_ae@champion --input /data/camera/today --output /data/inspections

Same arguments as ``sparkvision inspect``. Not ``jobs/inspect.py``: a script's folder comes first on
``sys.path``, so that name would shadow the standard library's ``inspect`` for every job.
"""

import sys

from sparkvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["inspect", *sys.argv[1:]]))
