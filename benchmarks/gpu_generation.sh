#!/usr/bin/env bash
# Generation speed on the device machine (benchmarks/generation.py): transformers.generate against
# chef-genius' engine (CUDA graphs), SmolLM2-135M-Instruct (the GGUF) and a FLAN-T5-large shape with
# random weights (benchmarks/make_model.py), presets greedy and careful, batches 1, 16, 64, 256,
# 500 held-out prompts of the bundled recipes. Written in session 23's engine work, NOT YET RUN.
# Stages, one device call each (each well under the 10-minute limit):
#   setup DIR      the carried wheels (.whl/), the GGUF's parts from DIR joined in /tmp/cg, the
#                  recipes prepared, the random FLAN-T5-large written
#   smoke          first: one small measurement on SmolLM2 (batch 16, greedy, 64 tokens) that shows the
#                  CUDA graph path runs and writes Transformers' greedy recipes ("same" = 1.0)
#   smollm2 DEC    the full grid for SmolLM2-135M, one preset (greedy | careful)
#   t5 DEC         the full grid for the FLAN-T5-large shape, one preset
# Results: $OUT/generation.json (merge into benchmarks/results/generation.json) and $OUT/*.log.
set -uo pipefail
CODE=$PWD
source "$(dirname "$0")/device_common.sh"
T5=/tmp/cg/flan-t5-large; DATA=/tmp/cg/gdata
B="python3 $CODE/benchmarks/generation.py --data $DATA --out $OUT/generation.json --label h200"
case "$1" in
  setup)
    device_setup "$2"
    cat /tmp/cg/gguf.part1 /tmp/cg/gguf.part2 > $GGUF && ls -la $GGUF
    device_data $DATA && ls $DATA
    device_model flan-t5-large $T5 && ls $T5 ;;
  smoke)
    $B --model $GGUF --batches 16 --decodings greedy --examples 16 --batches-per-run 1 --max-new-tokens 64 \
      --label h200-smoke 2>&1 | tee $OUT/smoke.log ;;
  smollm2)
    $B --model $GGUF --decodings "$2" 2>&1 | tee "$OUT/smollm2-$2.log" ;;
  t5)
    $B --model $T5 --decodings "$2" 2>&1 | tee "$OUT/t5-$2.log" ;;
esac
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
