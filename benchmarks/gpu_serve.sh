#!/usr/bin/env bash
# On the device machine: chef-genius serve on the GPU, 64 streamed requests at once
# (benchmarks/serve_load.py --random-smollm2: SmolLM2-135M's shape, random weights).
# Carry .whl/ holding the serve extra's wheels for the machine's Python:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl fastapi uvicorn httpx aiohttp (+ aiohappyeyeballs aiosignal frozenlist
#   multidict propcache yarl)
set -euo pipefail
CODE=$PWD; source "$(dirname "$0")/device_common.sh"
export PYTHONPATH=$PYTHONPATH:$CODE  # serve_load.py starts its server from tests/harness
device_wheels
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers, fastapi, uvicorn; print(torch.__version__, transformers.__version__)"
for tokens in ${MAX_TOKENS:-256}; do
  # SERVER_ARGS: more serve options (e.g. --server-arg=--stream-every=8); LOAD_ARGS: serve_load.py's own
  # (e.g. --warmup-rounds 1); TAG names the variant's file
  python3 benchmarks/serve_load.py --random-smollm2 --requests "${REQUESTS:-64}" --max-tokens "$tokens" \
    --server-arg=--device=cuda ${SERVER_ARGS:-} ${LOAD_ARGS:-} --out "$OUT/serve_load_h200_$tokens${TAG:+_$TAG}.json"
done
