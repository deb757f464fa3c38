# Developer entry points. The README's two set-up commands are `make demo` and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-dj system-deps demo test test-main test-dj lint k8s-tools image scan diagrams dev-cluster dev-cluster-down bench bench-operator bench-scale bench-formats bench-recovery bench-s3 clean

$(BIN)/dj-runner: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[operator,test]'
	touch $@

install: $(BIN)/dj-runner

# The optional dj extra (every Data-Juicer op) in its own environment, so .venv stays lean.
# Only the test runner (testtools) joins it: not the operator, whose dependencies (kopf pulls
# in aiohttp) would hide a package the dj extra forgets; tests/dj/test_dj_extra_alone.py checks.
DJ_VENV ?= .venv-dj
$(DJ_VENV)/bin/dj-runner: pyproject.toml
	$(PY) -m venv --clear $(DJ_VENV)
	$(DJ_VENV)/bin/pip install -q --upgrade pip
	$(DJ_VENV)/bin/pip install -q -e '.[testtools,dj]'
	touch $@

install-dj: $(DJ_VENV)/bin/dj-runner

demo: install
	rm -rf out/demo
	$(BIN)/dj-runner run examples/recipe.yaml --work-dir out/demo/work

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

k8s-tools:
	bash hack/build-k8s-tools.sh
	bash hack/build-kuberay.sh

# Debian packages the tests use: podman and friends (the image), prometheus (promtool and a
# real Prometheus). Installs only what is missing.
system-deps:
	bash hack/install-system-deps.sh

# The container image (cached: a no-op when nothing changed; see docs/install.md).
image: system-deps
	bash hack/build-image.sh

# checkov on the rendered chart and the Dockerfile (also run by the tests).
scan: k8s-tools
	bash hack/checkov.sh

# The architecture diagrams (docs/architecture.md): regenerate docs/diagrams/components.dot from
# the code's imports, then render every docs/diagrams/*.dot to docs/img/architecture/ (needs
# Graphviz's dot: `make system-deps`). A unit test fails while an image is stale.
diagrams:
	$(PY) hack/render_diagrams.py

# The whole suite: everything in .venv, then the Data-Juicer op tests in .venv-dj.
test: test-main test-dj

# pytest writes its JUnit report only when the session ends: a test that ended the test process
# itself (an os._exit in code under test) would otherwise pass for a whole suite with exit 0.
test-main: install system-deps k8s-tools image lint
	@mkdir -p build && rm -f build/pytest-main.xml
	DJ_TESTS_NO_SKIP=1 $(BIN)/pytest -q --ignore=tests/dj --junitxml=build/pytest-main.xml
	@test -s build/pytest-main.xml || { echo "pytest ended before its summary"; exit 1; }

test-dj: install-dj
	@mkdir -p build && rm -f build/pytest-dj.xml
	DJ_TESTS_NO_SKIP=1 $(DJ_VENV)/bin/pytest -q tests/dj --junitxml=build/pytest-dj.xml
	@test -s build/pytest-dj.xml || { echo "pytest ended before its summary"; exit 1; }

dev-cluster: install k8s-tools
	$(BIN)/python -m tests.harness.devcluster up

dev-cluster-down:
	$(BIN)/python -m tests.harness.devcluster down

bench: install
	$(BIN)/python bench/run_bench.py

# The operator at scale on the test control plane: JOBS jobs with live runner pods applied in a
# burst (docs/benchmarks.md, "The operator"). Not part of `make bench` or `make test`.
JOBS ?= 100
bench-operator: install k8s-tools
	$(BIN)/python bench/operator_bench.py --jobs $(JOBS)

# Parts of make bench, each alone (each prints its table and writes its JSON to bench/results/):
# scale in simulation (about 6 minutes), the checkpoint formats (about a minute) and recovery
# from 100 SIGKILLs (about 10 minutes).
bench-scale: install
	$(BIN)/python bench/scale_sim.py
	$(BIN)/python bench/scale_bucket.py

bench-formats: install
	$(BIN)/python bench/formats_bench.py

bench-recovery: install
	$(BIN)/python bench/recovery_bench.py

# The work dir in a bucket against on local disk, on the test S3 server (docs/benchmarks.md,
# "A work dir in object storage"; about 10 minutes).
bench-s3: install
	$(BIN)/python bench/s3_workdir_bench.py

clean:
	rm -rf out .pytest_cache .ruff_cache
