#!/usr/bin/env bash
# The scale benchmark (benchmarks/scale.py) at full RecipeNLG size on the device machine, in stages
# that fit its calls (a call lasts at most 10 minutes; the benchmark may take longer):
#   start SAMPLE   install the carried wheels (.whl/), copy the code to /tmp/sc/code, and start
#                  scale.py in the background (setsid) on SAMPLE (the RecipeNLG sample, carried)
#   wait S         sleep up to S seconds while it runs, then collect
#   collect        its log and scale.json to $OUT
# Knobs: ROWS (default 2231142), WORKERS (default 16), RANKS (default: every GPU).
set -uo pipefail
source "$(dirname "$0")/device_common.sh"
mkdir -p /tmp/sc
# scale.py runs its own copy of the code (/tmp/sc/code) and is measured with the libraries' own
# defaults: no shared cache folder, the tokenizers library's threads on.
export PYTHONPATH=/tmp/site
unset TOKENIZERS_PARALLELISM CHEF_GENIUS_CACHE
case "$1" in
  start)
    device_wheels
    rm -rf /tmp/sc/code && mkdir -p /tmp/sc/code/tests && cp -r src benchmarks /tmp/sc/code/ && cp -r tests/data /tmp/sc/code/tests/
    cp "$2" /tmp/sc/sample.csv
    RANKS=${RANKS:-$(python3 -c "import torch; print(torch.cuda.device_count())")}
    nproc; free -g | head -2; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    setsid nohup python3 /tmp/sc/code/benchmarks/scale.py --rows "${ROWS:-2231142}" --workers "${WORKERS:-16}" \
      --ranks "$RANKS" --sample /tmp/sc/sample.csv --work /tmp/sc/work > /tmp/sc/log 2>&1 < /dev/null &
    echo "started: $!"; sleep 30; tail -n 5 /tmp/sc/log ;;
  wait)
    for _ in $(seq 1 $(( $2 / 10 ))); do pgrep -f "[s]cale.py --rows" > /dev/null || break; sleep 10; done
    "$0" collect ;;
  collect)
    cp /tmp/sc/log "$OUT/scale.log"; cp /tmp/sc/code/benchmarks/results/scale.json "$OUT/" 2>/dev/null
    pgrep -f "[s]cale.py --rows" > /dev/null && echo "still running" || echo "finished"
    tail -n 12 /tmp/sc/log; ls -la /tmp/sc/work 2>/dev/null; ls -la "$OUT" ;;
esac
