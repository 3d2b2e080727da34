# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install chef-genius, train the tiny model on the bundled sample (CPU)
#   make test   create .venv (if needed), install test tools (and, as root with apt, Debian's chromium for
#               the page test), run the test suite
#   make browser   only the chromium step: installs it, or says how (the page test is skipped without it)
#   make docker-test   build the Docker image for real and test it (root, a few minutes; not in CI)
#   make light-check   `pip install .` without extras in a fresh venv: --help, prepare, score run, no torch (CI)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean docker-test browser light-check

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

test: $(STAMP) browser
	$(BIN)/python -m pytest

# tests/test_serve_page.py drives Debian's chromium through chromium-driver (about 120 MB, a
# minute with apt); without them it is skipped with a one-line reason.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium and chromium-driver for the page test"; \
		(export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
		 apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "could not install chromium: the page test will be skipped"; \
	else \
		echo "the page test needs Debian's chromium: sudo apt-get install chromium chromium-driver (else it is skipped)"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/prepare_speed.py --rows 500000

docker-test:
	bash docker/test_image.sh

clean:
	rm -rf runs benchmarks/_work

# The light install for real (tests/test_light_install.py simulates it in the test venv): a fresh venv
# with the package and its base dependencies only, no torch; --help, prepare and score must work.
# Installed from a copy of the sources in a fresh temporary folder: a build leaves nothing in the checkout.
light-check:
	$(eval LIGHT := $(shell mktemp -d /tmp/chef-genius-light.XXXXXX))
	$(PYTHON) -m venv $(LIGHT)/venv && mkdir $(LIGHT)/source
	cp -r pyproject.toml README.md src $(LIGHT)/source/ && rm -rf $(LIGHT)/source/src/*.egg-info
	$(LIGHT)/venv/bin/pip install --quiet $(LIGHT)/source
	$(LIGHT)/venv/bin/python -c "import importlib.util as u; found = [m for m in ('torch', 'transformers', 'numpy') if u.find_spec(m)]; assert not found, f'the light install pulled in {found}'"
	$(LIGHT)/venv/bin/chef-genius --help > /dev/null
	$(LIGHT)/venv/bin/chef-genius prepare --sample --out $(LIGHT)/prepared --quiet
	printf 'Tomato pasta\n\nIngredients:\n- 200 g pasta\n- 2 tomatoes\n\nSteps:\n1. Boil the pasta.\n2. Add the tomatoes.\n' > $(LIGHT)/recipe.txt
	$(LIGHT)/venv/bin/chef-genius score $(LIGHT)/recipe.txt
	rm -rf $(LIGHT)
	@echo "light install: --help, prepare and score ran without torch"
