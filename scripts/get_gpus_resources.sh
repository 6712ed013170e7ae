#!/usr/bin/env bash
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript, or
# spark.worker.resource.gpu.discoveryScript on a standalone worker): prints this host's GPU
# indices as Spark's ResourceInformation JSON, e.g. {"name": "gpu", "addresses": ["0", "1"]}.
# Indices are nvidia-smi's (PCI bus order); sparkvision sets CUDA_DEVICE_ORDER=PCI_BUS_ID so
# CUDA numbers them alike. It must exist and be executable on every executor host.
set -euo pipefail
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | awk 'NF {printf "%s\"%s\"", sep, $1; sep=", "}')
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
