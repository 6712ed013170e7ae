"""A registered VAE's latent space: attribute vectors (a Spark job over the train split), new faces,
a photo morphed along attribute vectors, interpolation between two photos.

    spark-submit jobs/vae.py vectors --model-uri models:/sparkvision-vae@candidate --data /data/parquet/celeba
    spark-submit jobs/vae.py morph --model-uri models:/sparkvision-vae@candidate --image me.jpg \
        --attribute Smiling=+2,Eyeglasses=+1 --steps -3:3:7 --out /data/latent

Same arguments as ``sparkvision vae``.
"""

import sys

from sparkvision.cli import main

if __name__ == "__main__":
    sys.exit(main(["vae", *sys.argv[1:]]))
