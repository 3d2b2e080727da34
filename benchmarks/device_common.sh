# Sourced by the device-machine scripts (gpu_quality.sh, gpu_ablation.sh): their environment (the
# code copied to /tmp/cg/code, the carried wheels in /tmp/site, caches in /tmp/cg, results in
# $OUT) and the GGUF's path once joined.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/cg
export PYTHONPATH=/tmp/cg/code/src:/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export CHEF_GENIUS_CACHE=/tmp/cg/cache HF_HUB_OFFLINE=1
GGUF=/tmp/cg/SmolLM2-135M-Instruct.Q4_1.gguf

# device_setup DIR: install the carried wheels (.whl/) into /tmp/site, stash the GGUF part(s) from
# DIR in /tmp/cg, and show the GPUs and the library versions there.
device_setup() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  cp "$1"/*.part* /tmp/cg/ && ls -la /tmp/cg
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, peft, gguf; print(torch.__version__, transformers.__version__, peft.__version__, torch.cuda.device_count())"
}
