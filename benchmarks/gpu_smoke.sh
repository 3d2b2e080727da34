#!/usr/bin/env bash
# Short FLAN-T5-base-architecture trainings on one GPU (run on the device machine).
# Expects .devdata/ (recipe files) and .whl/ (ijson, orjson wheels) carried beside the tree.
# Writes logs and metrics under $OUT.
set -uo pipefail
CODE=$PWD; source "$(dirname "$0")/device_common.sh"
device_wheels || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
} > "$OUT/env.txt" 2>&1
device_model flan-t5-base /tmp/flan-t5-base
device_data /tmp/data
COMMON="--model /tmp/flan-t5-base --data /tmp/data --epochs 1 --batch-size 12 --gradient-accumulation-steps 4 \
  --eval-steps 20 --report-to jsonl --set logging.log_every=5 --set model.max_source_tokens=256"
for run in "lora-nonoise:--disable-gradient-noise" "lora-noise:${NOISE_FLAGS:---set gradient_noise.enabled=true}" "full:--disable-lora --disable-gradient-noise"; do
  name=${run%%:*}; flags=${run#*:}
  echo "== $name: chef-genius train $COMMON $flags" >> "$OUT/runs.log"
  /usr/bin/time -f "%e s wall" python3 -m chef_genius train $COMMON $flags --output-dir /tmp/run-$name \
    >> "$OUT/runs.log" 2>&1
  cp /tmp/run-$name/metrics.jsonl "$OUT/metrics-$name.jsonl"
done
CHEF_GENIUS_SHARED_DATA=$PWD/.devdata python3 -m pytest tests/test_training.py tests/test_training_cores.py -q -p no:warnings -x 2>&1 | tail -15 > "$OUT/pytest-gpu.txt"
