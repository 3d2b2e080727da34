. benchmarks/.device_setup.sh
python3 benchmarks/throughput.py --model /tmp/fl --data /tmp/data --steps 10 --timeout ${CFG_TIMEOUT:-150} --out $OUT/throughput.json --only "$@"
python3 benchmarks/learning_curve.py --model /tmp/fl --data /tmp/data --steps ${CURVE_STEPS:-200} --out $OUT/curve.json
