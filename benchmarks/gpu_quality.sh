#!/usr/bin/env bash
# The quality run on the device machine (benchmarks/quality.py), in stages that fit its calls:
#   setup  DIR  install the carried wheels (.whl/), stash a GGUF part from DIR in /tmp/cg
#   launch DIR  join the GGUF parts, unpack DIR/shared.tar.gz, prepare, convert the GGUF, then start
#               in the background (setsid): the LoRA fine-tune, the full fine-tune, the base model's
#               evaluation
#   wait S      sleep up to S seconds while training runs, then show progress
#   evaluate    evaluate the two fine-tunes (the LoRA one with several decodings), in the background
#   collect     copy results and logs to $OUT
# Code runs from a copy in /tmp/cg/code, so a later call's tree does not change a running job.
# The README's run was made of these stages, with the full fine-tune restarted once (its first
# try drew gradient noise on the host, since moved to the GPU) and the `careful` / `sample`
# decodings of both fine-tunes evaluated in a second evaluate call (--suffix=-more).
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
W=/tmp/cg/work; G=$GGUF
Q="python3 /tmp/cg/code/benchmarks/quality.py --work $W --gguf $G"
TRAIN="--epochs 3 --max-tokens 16384 --gradient-accumulation-steps 1 --eval-steps 400 \
  --set schedule.first_cycle_steps=430 --set eval.max_eval_batches=40 --set logging.log_every=20"
bg() { setsid nohup bash -c "$1" > "$W/$2.out" 2>&1 < /dev/null & }
case "$1" in
  setup)
    device_setup "$2" ;;
  launch)
    cp "$2"/*.part* /tmp/cg/ && cat /tmp/cg/gguf.part1 /tmp/cg/gguf.part2 > $G && ls -la $G
    rm -rf /tmp/cg/code && mkdir -p /tmp/cg/code $W /tmp/cg/shared && cp -r src benchmarks /tmp/cg/code/
    tar -xzf "$2/shared.tar.gz" -C /tmp/cg/shared
    $Q prepare --shared /tmp/cg/shared || exit 1
    python3 -c "from pathlib import Path; from chef_genius.training.models import gguf_folder; print(gguf_folder(Path('$G')))" || exit 1
    bg "$Q train --name lora -- $TRAIN" train-lora
    bg "$Q train --name full -- $TRAIN --disable-lora --learning-rate 5e-5 --disable-gradient-noise" train-full
    bg "$Q evaluate --name base --examples 500 --decodings guarded,careful" eval-base
    sleep 60; tail -n 3 $W/*.out; tail -n 2 $W/train-*.log; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv ;;
  wait)
    for _ in $(seq 1 $(( $2 / 15 ))); do
      [ -f $W/part-train-lora.json ] && [ -f $W/part-train-full.json ] && break; sleep 15; done
    tail -n 3 $W/*.out; for r in lora full; do tail -c 400 $W/$r/metrics.jsonl; echo; done ;;
  evaluate)
    bg "$Q evaluate --name lora --examples 500 --decodings guarded,greedy,sample,chef,careful" eval-lora
    bg "$Q evaluate --name full --examples 500 --decodings guarded,greedy,sample,careful" eval-full
    sleep 30; tail -n 3 $W/*.out ;;
  collect)
    cp $W/part-*.json "$OUT"/ 2>/dev/null
    (cd $W && tar -czf "$OUT/runs.tar.gz" --ignore-failed-read *.out *.log lora/samples full/samples \
      lora/metrics.jsonl full/metrics.jsonl lora/final/adapter_config.json lora/final/adapter_model.safetensors)
    ls -la "$OUT" ;;
esac
