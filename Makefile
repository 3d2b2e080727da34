# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install chef-genius, train the tiny model on the bundled sample (CPU)
#   make test   create .venv (if needed), install test tools, run the test suite
#   make docker-test   build the Docker image for real and test it (root, a few minutes; not in CI)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean docker-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of PyTorch first, or pip pulls a several-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[train,test]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/chef-genius train --output-dir runs/demo
	@echo "chef-genius is installed in $(VENV)/: run $(BIN)/chef-genius --help, or 'source $(BIN)/activate' first"

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/prepare_speed.py --rows 500000

docker-test:
	bash docker/test_image.sh

clean:
	rm -rf runs benchmarks/_work
