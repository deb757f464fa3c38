# Developer entry points. The README's two set-up commands are `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint k8s-tools image scan dev-cluster dev-cluster-down bench clean

$(BIN)/dj-runner: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/dj-runner

demo: install
	rm -rf out/demo
	$(BIN)/dj-runner run examples/recipe.yaml --work-dir out/demo/work

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

k8s-tools:
	bash hack/build-k8s-tools.sh

# The container image (cached: a no-op when nothing changed; see docs/install.md).
image:
	bash hack/build-image.sh

# checkov on the rendered chart and the Dockerfile (also run by the tests).
scan: k8s-tools
	bash hack/checkov.sh

test: install k8s-tools image lint
	$(BIN)/pytest -q

dev-cluster: install k8s-tools
	$(BIN)/python -m tests.harness.devcluster up

dev-cluster-down:
	$(BIN)/python -m tests.harness.devcluster down

bench: install
	$(BIN)/python bench/run_bench.py

clean:
	rm -rf out .pytest_cache .ruff_cache
