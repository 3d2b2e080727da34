#!/usr/bin/env bash
# The ablation study (benchmarks/ablation.py) on the device machine, in stages that fit its calls:
#   setup  DIR        install the carried wheels (.whl/), stash the GGUF's first part from DIR in /tmp/cg
#   launch DIR DATA   join the GGUF parts (second part in DIR), convert it, then start the study in the
#                     background (setsid) on every GPU over the prepared subset DATA
#                     (made here with `ablation.py subset`, carried as a folder)
#   wait S            sleep up to S seconds while the study runs, then collect
#   collect           the cells' results (cell.json) and the study log to $OUT
# Code runs from a copy in /tmp/cg/code, so a later call's tree does not change a running study.
# Knobs: PER_GPU (cells at a time on each GPU, default 2: a full fine-tuning process held 60-80 GiB with its CUDA-graph pools, and 3 ran out of memory when several ran together), DEADLINE (seconds after launch when no
# new cell starts, default 1200), SEEDS (default 0,1,2), ARMS (default every arm); cells done earlier
# are skipped when their cell.json is carried in DATA/../cells/ARM-sSEED/.
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
W=/tmp/cg/ablation; G=$GGUF
progress() {
  echo "cells done: $(ls $W/cells/*/cell.json 2>/dev/null | wc -l)"; tail -n 6 $W/study.log
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
}
case "$1" in
  setup)
    device_setup "$2" ;;
  launch)
    cp "$2"/*.part* /tmp/cg/ && cat /tmp/cg/gguf.part1 /tmp/cg/gguf.part2 > $G && ls -la $G
    rm -rf /tmp/cg/code && mkdir -p /tmp/cg/code $W && cp -r src benchmarks /tmp/cg/code/
    [ -d $W/data ] || cp -r "$3" $W/data
    # cells done in earlier sessions (their cell.json, carried beside DATA in cells/) are skipped
    [ -d "$3/../cells" ] && mkdir -p $W/cells && cp -rn "$3/../cells/." $W/cells/
    python3 -c "from pathlib import Path; from chef_genius.model.loading import gguf_folder; print(gguf_folder(Path('$G')))" || exit 1
    GPUS=$(python3 -c "import torch; print(','.join(map(str, range(torch.cuda.device_count()))))")
    setsid nohup python3 /tmp/cg/code/benchmarks/ablation.py run --work $W --gguf $G --gpus $GPUS \
      --per-gpu ${PER_GPU:-2} --seeds ${SEEDS:-0,1,2} ${ARMS:+--arms $ARMS} --deadline ${DEADLINE:-1200} > $W/run.out 2>&1 < /dev/null &
    sleep 90; progress; tail -n 5 $W/cells/*/train.log | tail -n 30 ;;
  wait)
    for _ in $(seq 1 $(( $2 / 15 ))); do tail -n 1 $W/study.log 2>/dev/null | grep -q "study: done" && break; sleep 15; done
    "$0" collect ;;
  collect)  # after every wait too: what is done survives a machine taken back
    (cd $W && tar -czf "$OUT/cells.tar.gz" --ignore-failed-read study.log run.out cells/*/cell.json cells/*/cell.log \
      cells/*/train.log cells/*/run/metrics.jsonl cells/*/run/run_summary.json)
    progress; ls -la "$OUT" ;;
esac
