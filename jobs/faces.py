"""Face identification: enroll known identities, identify new faces.

    spark-submit jobs/faces.py enroll --model-uri models:/sparkvision-vae@candidate \
        --input /data/parquet/celeba --gallery /data/gallery
    spark-submit jobs/faces.py identify --input /data/new_faces --gallery /data/gallery --output /data/ids

Same arguments as ``sparkvision faces``.
"""

import sys

from sparkvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["faces", *sys.argv[1:]]))
