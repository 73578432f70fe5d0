# Every target installs first if needed, so each works as the only command on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CLUSTERS ?= 3
ROUNDS ?= 10

.PHONY: install test e2e lint demo bench deploy images clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

# The end-to-end suite alone; E2E_TARGET=real runs it against a real hub (README).
e2e: install
	$(BIN)/python -m pytest tests/e2e -v -s -p no:cacheprovider

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: install
	$(BIN)/fl-sandbox demo --clusters $(CLUSTERS) --rounds $(ROUNDS)

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks

deploy:
	kubectl apply -k deploy/
	kubectl apply -k addon_templates/

images:
	docker build -f images/hub-manager.Dockerfile -t ocm-federated-learning/hub-manager:dev .
	docker build -f images/spoke-agent.Dockerfile -t ocm-federated-learning/spoke-agent:dev .
	docker build -f images/trainer.Dockerfile -t ocm-federated-learning/trainer:dev .

clean:
	rm -rf $(VENV) demo-output .mypy_cache .ruff_cache .pytest_cache
