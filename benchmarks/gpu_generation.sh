#!/usr/bin/env bash
# Generation and serving speed on the device machine: benchmarks/generation.py (transformers.generate
# against chef-genius' engine with CUDA graphs) for SmolLM2-135M-Instruct (the GGUF) and a FLAN-T5-large
# shape with random weights (benchmarks/make_model.py), and benchmarks/serve_load.py (64 streams).
# Prompts: 500 held-out recipes (openrecipes' foodnetwork.com and williams-sonoma.com rows, prepared).
# Stages, one device call each (each well under the 10-minute limit):
#   setup DIR   carry .whl and DIR (the GGUF's first part): the wheels, the part stashed in /tmp/cg
#   bench DIR   carry DIR (the GGUF's second part and qdata.tar.xz): the GGUF joined, the held-out
#               recipes prepared, then: smoke (batch 16, greedy, 64 tokens: the CUDA-graph path runs and
#               writes Transformers' greedy recipes, "same" = 1.0), SmolLM2 careful at batches 1-256,
#               greedy at 64 and 256, and the server's load test
#   t5          the FLAN-T5-large shape, careful and greedy, batches 16 and 64
#   profile     the engine's profile at batch 256 (SmolLM2's shape, random weights, bfloat16)
#   evalspeed   benchmarks/evaluate_speed.py: evaluate's time on 500 held-out recipes
# DATA (default /tmp/cg/gdata): the prepared held-out recipes, e.g. /tmp/cg/work/heldout after gpu_quality.sh prep.
# Results: $OUT/generation.json (merge into benchmarks/results/generation.json), $OUT/*.log, serve JSON.
set -uo pipefail
CODE=$PWD
source "$(dirname "$0")/device_common.sh"
T5=/tmp/cg/flan-t5-large; DATA=${DATA:-/tmp/cg/gdata}; S=/tmp/cg/shared
B="python3 $CODE/benchmarks/generation.py --data $DATA --out $OUT/generation.json --label h200"
case "$1" in
  setup)
    device_setup "$2" ;;
  bench)
    [ -d .whl ] && device_wheels  # already in /tmp/site after setup, while the machine is warm
    cp "$2"/gguf.part2 /tmp/cg/ && cat /tmp/cg/gguf.part1 /tmp/cg/gguf.part2 > $GGUF && ls -la $GGUF
    mkdir -p $S && tar -xJf "$2/qdata.tar.xz" -C $S
    python3 -m chef_genius prepare $S/heldout_sites.jsonl --out $DATA --quiet > $OUT/prepare.log 2>&1; ls $DATA
    timeout 120 $B --model $GGUF --batches 16 --decodings greedy --examples 16 --batches-per-run 1 --max-new-tokens 64 \
      --label h200-smoke 2>&1 | tee $OUT/smoke.log
    timeout 260 $B --model $GGUF --decodings careful 2>&1 | tee $OUT/smollm2-careful.log
    timeout 100 $B --model $GGUF --decodings greedy --batches 64 256 2>&1 | tee $OUT/smollm2-greedy.log
    timeout 90 python3 $CODE/benchmarks/serve_load.py --model $GGUF --requests 64 --max-tokens 256 \
      --server-arg=--device=cuda --out $OUT/serve_load_h200.json 2>&1 | tee $OUT/serve.log ;;
  t5)
    device_model flan-t5-large $T5 $S/recipenlg_sample_1k.csv $S/wikibooks_recipes_en.json && ls $T5
    timeout 400 $B --model $T5 --decodings careful greedy --batches 16 64 --batches-per-run 1 --examples 64 \
      --max-new-tokens 256 2>&1 | tee "$OUT/t5.log" ;;
  profile)  # SmolLM2-135M's shape (random weights), careful, batch 256, bfloat16: tokens/s and where the step's time goes
    timeout 240 python3 $CODE/benchmarks/profile_generation.py --random-smollm2 --data $DATA --batch 256 --examples 256 \
      --variants ${VARIANTS:-bf16-graphs fp32-graphs} --profile-dtype bfloat16 --out $OUT/generation_profile.json > $OUT/profile.log 2>&1
    head -n 40 $OUT/profile.log ;;
  evalspeed)  # evaluate's own time on 500 held-out recipes, without and with the 3-sample protocol (random weights:
              # no recipe ends early, every one runs to 512 tokens: the worst case)
    timeout 400 python3 $CODE/benchmarks/evaluate_speed.py --random-smollm2 --data $DATA --label h200-random \
      --out $OUT/evaluate_speed.json 2>&1 | grep -v "it/s" | tee $OUT/evalspeed.log ;;
esac
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
