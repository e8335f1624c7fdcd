# dmsac: `make run` and `make test` each set up everything on a fresh machine first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/vehicle.yaml
ARGS ?=
# PyTorch first, pinned: an unpinned torch pulls several GB of CUDA packages.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test lint promtool monitor tensorboard clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

run: setup
	$(PY) -m cluster.train --config $(CONFIG) $(ARGS)

# Real Prometheus/promtool from the OS packages, installed when missing and possible.
promtool:
	@command -v promtool >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
	  || echo "warning: promtool not installed; Prometheus tests will be skipped"; }

test: setup promtool
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(ARGS)

lint: setup
	$(PY) -m ruff check .

# Real Prometheus on loopback, watching a local run: `make monitor RUN_DIR=runs/vehicle`.
# The learner writes $(RUN_DIR)/prometheus_targets.json; data goes to $(RUN_DIR)/prometheus/.
RUN_DIR ?= runs/default
PROMETHEUS ?= prometheus
MONITOR_PORT ?=
monitor: promtool
	@command -v $(PROMETHEUS) >/dev/null || { echo "error: $(PROMETHEUS) not found (Debian/Ubuntu: apt-get install prometheus)"; exit 1; }
	@mkdir -p $(RUN_DIR)/prometheus
	@cp deploy/prometheus/prometheus.local.yml $(RUN_DIR)/prometheus/prometheus.yml
	@cp deploy/prometheus/alerts.yml $(RUN_DIR)/prometheus/alerts.yml
	@port=$${MONITOR_PORT:-$$($(PYTHON) -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}; \
	  echo "Prometheus: http://127.0.0.1:$$port  (alerts: http://127.0.0.1:$$port/alerts; targets from $(RUN_DIR)/prometheus_targets.json; Ctrl-C stops it)"; \
	  exec $(PROMETHEUS) --config.file=$(RUN_DIR)/prometheus/prometheus.yml --storage.tsdb.path=$(RUN_DIR)/prometheus/data \
	    --web.listen-address=127.0.0.1:$$port --log.level=warn

# TensorBoard on loopback over a run's scalars: `make tensorboard RUN_DIR=runs/vehicle` (TB_PORT=6006 by default).
TB_PORT ?= 6006
tensorboard: setup
	@test -d $(RUN_DIR)/tensorboard || { echo "error: $(RUN_DIR)/tensorboard not found (metrics.tensorboard: true writes it)"; exit 1; }
	@echo "TensorBoard: http://127.0.0.1:$(TB_PORT)  (scalars of $(RUN_DIR)/tensorboard; Ctrl-C stops it)"
	exec $(VENV)/bin/tensorboard --logdir $(RUN_DIR)/tensorboard --host 127.0.0.1 --port $(TB_PORT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
