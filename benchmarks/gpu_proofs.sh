#!/usr/bin/env bash
# The redesign's proofs on one GPU (device machine; carry .whl and .devdata, see device_common.sh):
#   tests           the GPU tests, each named (test_gpu.py and the engine's -m gpu tests, the slots'
#                   CUDA tests) beside the kill/resume harness (gpu_kill_resume.sh); logs in $OUT
#   throughput OLD  training throughput (throughput.py --only ours-seed-batch) of the code in OLD (its
#                   src/ and benchmarks/, e.g. the commit before the redesign) and of this tree, in turn,
#                   ROUNDS times (default 1); $OUT/throughput-{old,new}-N.json
set -uo pipefail
CODE=$PWD; source "$(dirname "$0")/device_common.sh"
case "$1" in
  tests)
    device_wheels
    (export CHEF_GENIUS_SHARED_DATA=$PWD/.devdata
     timeout "${TESTS_S:-420}" python3 -m pytest -p no:cacheprovider -o addopts="" -v -rs \
       tests/test_gpu.py tests/test_generation_engine.py tests/test_generation_t5.py tests/test_generation_gemma.py -m gpu
     timeout 120 python3 -m pytest -p no:cacheprovider -o addopts="" -v -rs tests/test_generation_slots.py -k cuda
    ) > "$OUT/gpu-tests.log" 2>&1 &
    bash "$(dirname "$0")/gpu_kill_resume.sh" > "$OUT/kill_resume.log" 2>&1
    tail -n 8 "$OUT/kill_resume.log"; wait
    grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" "$OUT/gpu-tests.log" | tail -n 40 ;;
  throughput)
    old=$(cd "$2" && pwd)
    device_wheels && device_model flan-t5-large /tmp/fl && device_data /tmp/data
    for round in $(seq 1 "${ROUNDS:-1}"); do
      for side in old new; do
        dir=$PWD; [ $side = old ] && dir=$old
        (cd "$dir" && PYTHONPATH=$dir/src:/tmp/site python3 benchmarks/throughput.py --model /tmp/fl --data /tmp/data \
          --steps 10 --timeout "${CFG_TIMEOUT:-200}" --out "$OUT/throughput-$side-$round.json" --only ours-seed-batch) \
          > "$OUT/throughput-$side-$round.log" 2>&1
        python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']['ours-seed-batch']; \
print(sys.argv[2], round(r['tokens_per_second']), 'tok/s, capture', round(r.get('capture_seconds', 0)), 's')" \
          "$OUT/throughput-$side-$round.json" "$side-$round" || tail -n 5 "$OUT/throughput-$side-$round.log"
      done
    done ;;
esac
