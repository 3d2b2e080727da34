# Shared set-up for the device scripts: wheels, paths, a FLAN-T5-large-shaped model and prepared data.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
python3 benchmarks/make_model.py --arch flan-t5-large --corpus .devdata/recipenlg_sample_1k.csv .devdata/wikibooks_recipes_en.json --out /tmp/fl > /dev/null 2>&1
python3 -m chef_genius prepare .devdata/recipenlg_sample_1k.csv .devdata/wikibooks_recipes_en.json --out /tmp/data --quiet > /dev/null 2>&1
