# The one shared set-up of the device-machine scripts (gpu_*.sh), sourced by each of them: the
# environment (results in $OUT, the chef-genius sources under $CODE, the carried wheels in /tmp/site,
# caches in /tmp/cg), the GGUF's path once joined, and the set-up steps as functions.
#
# Before a script's first device call of a session, beside the checkout (both folders git-ignored;
# name them in the call's carry):
#   mkdir -p .devdata && cp ../shared/data/recipenlg_sample_1k.csv ../shared/data/wikibooks_recipes_en.json .devdata/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl ijson orjson      # the two dependencies the device image lacks
#
# CODE: where the sources are imported from. The scripts that run in the background across calls
# (gpu_quality.sh, gpu_ablation.sh) run a copy in /tmp/cg/code, the default, so that a later call's
# tree does not change a running job; the others set CODE=$PWD (a statement of its own) before sourcing this file.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/cg
CODE=${CODE:-/tmp/cg/code}
export PYTHONPATH=$CODE/src:/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
export CHEF_GENIUS_CACHE=/tmp/cg/cache HF_HUB_OFFLINE=1
GGUF=/tmp/cg/SmolLM2-135M-Instruct.Q4_1.gguf
DEVDATA=(.devdata/recipenlg_sample_1k.csv .devdata/wikibooks_recipes_en.json)

# device_wheels: install the carried wheels (.whl/) into /tmp/site.
# Without .whl carried, the wheels a call installed earlier on this (warm) machine are used, if it did.
device_wheels() {
  if [ ! -d .whl ]; then
    [ -f /tmp/site/.installed ] && { echo "no .whl carried: using the wheels installed earlier (/tmp/site)"; return; }
    echo "no .whl carried and none installed on this machine: carry .whl" >&2; return 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.installed
}

# device_setup DIR: the wheels, the GGUF part(s) from DIR stashed in /tmp/cg, and the GPUs and the
# library versions there.
device_setup() {
  device_wheels
  cp "$1"/*.part* /tmp/cg/ && ls -la /tmp/cg
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, peft, gguf; print(torch.__version__, transformers.__version__, peft.__version__, torch.cuda.device_count())"
}

# device_model ARCH DEST [CORPUS...]: a randomly initialised model of a real architecture
# (benchmarks/make_model.py, e.g. flan-t5-large) with a tokenizer trained on CORPUS (default: .devdata).
device_model() {
  local arch=$1 dest=$2; shift 2
  [ $# -gt 0 ] || set -- "${DEVDATA[@]}"
  python3 "$CODE/benchmarks/make_model.py" --arch "$arch" --corpus "$@" --out "$dest" > /dev/null 2>&1
}

# device_data DEST: the .devdata recipe files prepared into DEST.
device_data() {
  python3 -m chef_genius prepare "${DEVDATA[@]}" --out "$1" --quiet > /dev/null 2>&1
}
