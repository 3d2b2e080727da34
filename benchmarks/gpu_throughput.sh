#!/usr/bin/env bash
# Throughput of the training step (benchmarks/throughput.py) and a learning curve
# (benchmarks/learning_curve.py) on one GPU, on a FLAN-T5-large-shaped model (run on the device
# machine; needs .whl and .devdata carried, see device_common.sh). Arguments: the configurations to
# measure (throughput.py --only). Writes $OUT/throughput.json and $OUT/curve.json.
set -u
CODE=$PWD; source "$(dirname "$0")/device_common.sh"
device_wheels && device_model flan-t5-large /tmp/fl && device_data /tmp/data
python3 benchmarks/throughput.py --model /tmp/fl --data /tmp/data --steps 10 --timeout ${CFG_TIMEOUT:-150} --out $OUT/throughput.json --only "$@"
python3 benchmarks/learning_curve.py --model /tmp/fl --data /tmp/data --steps ${CURVE_STEPS:-200} --out $OUT/curve.json
