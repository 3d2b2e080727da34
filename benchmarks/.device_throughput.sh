set -u
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 benchmarks/make_model.py --arch flan-t5-large --corpus .devdata/recipenlg_sample_1k.csv .devdata/wikibooks_recipes_en.json --out /tmp/fl > /dev/null 2>&1
python3 -m chef_genius prepare .devdata/recipenlg_sample_1k.csv .devdata/wikibooks_recipes_en.json --out /tmp/data --quiet > /dev/null 2>&1
python3 benchmarks/throughput.py --model /tmp/fl --data /tmp/data --steps 10 --timeout ${CFG_TIMEOUT:-150} --out $OUT/throughput.json --only "$@"
python3 benchmarks/learning_curve.py --model /tmp/fl --data /tmp/data --steps ${CURVE_STEPS:-100} --out $OUT/curve.json
