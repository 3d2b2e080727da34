# Shared set-up for the device scripts: wheels, paths, a FLAN-T5-large-shaped model and prepared data.
# Before the first device call of a session (both folders are git-ignored; name them in carry):
#   printf '/.whl/\n/.devdata/\n' >> .git/info/exclude
#   mkdir -p .devdata && cp ../shared/data/recipenlg_sample_1k.csv ../shared/data/wikibooks_recipes_en.json .devdata/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl ijson orjson      # the two dependencies the device image lacks
set -u
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
python3 benchmarks/make_model.py --arch flan-t5-large --corpus .devdata/recipenlg_sample_1k.csv .devdata/wikibooks_recipes_en.json --out /tmp/fl > /dev/null 2>&1
python3 -m chef_genius prepare .devdata/recipenlg_sample_1k.csv .devdata/wikibooks_recipes_en.json --out /tmp/data --quiet > /dev/null 2>&1
