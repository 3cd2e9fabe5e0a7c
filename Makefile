# The entry points: `make demo` runs the pipeline with simulated shoppers, `make test` the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration test-faults test-kafka kafka lint check-deploy lock bench bench-collector clean

install: $(STAMP)

$(STAMP): pyproject.toml package.json package-lock.json web/shop.js
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@# The demo shop's analytics.js bundle, from npm where npm is present; without it the
	@# shop page says what is missing, and everything else needs Python only.
	@if command -v npm >/dev/null; then \
	  npm ci --no-audit --no-fund --loglevel=error && npm run --silent build:shop; \
	else \
	  echo "npm not found: the demo shop (/shop) will run without analytics.js"; \
	fi
	touch $(STAMP)

demo: install
	$(BIN)/cdp demo $(if $(DURATION),--duration $(DURATION),)

test: install
	$(BIN)/pytest -q -p no:cacheprovider

test-unit: install
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

test-integration: install
	$(BIN)/pytest -q -p no:cacheprovider tests/integration

# Only the tests that kill workers and let them join and leave (they are in `make test` too);
# the SIGKILL fault injection prints a JSON report of what was lost or doubled.
test-faults: install
	$(BIN)/pytest -q -s -p no:cacheprovider -m faults tests/integration

# Apache Kafka's jars (the version pinned in deploy/kafka/pom.xml) into .kafka/libs, for
# `cdp broker --apache-kafka`, `make test-kafka` and `make bench BROKER=apache-kafka`.
KAFKA_STAMP := .kafka/libs/.fetched
kafka: $(KAFKA_STAMP)

$(KAFKA_STAMP): deploy/kafka/pom.xml
	@command -v mvn >/dev/null || { echo "need Maven (apt-get install maven) for make kafka"; exit 1; }
	@command -v java >/dev/null || { echo "need Java 17 (apt-get install openjdk-17-jdk-headless)"; exit 1; }
	rm -rf .kafka/libs
	mvn -q -B -f deploy/kafka/pom.xml package
	touch $(KAFKA_STAMP)

# The integration suite, SIGKILL and join/leave included, against Apache Kafka (KRaft).
test-kafka: install kafka
	CDP_TEST_BROKER=apache-kafka $(BIN)/pytest -q -p no:cacheprovider tests/integration

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install $(if $(filter apache-kafka,$(BROKER)),kafka,)
	$(BIN)/python -m benchmarks.suite --profile $(if $(BROKER),--broker $(BROKER),) $(if $(EVENTS),--events $(EVENTS),) $(if $(PROFILES),--profiles $(PROFILES),) $(if $(SHOPPERS),--shoppers $(SHOPPERS),) $(if $(MIX),--mix $(MIX),)

# The collector alone: events/s of one process (pinned to one core) with batches of 100, and
# request latency at 1,000 requests/s, from a load generator in a process of its own.
bench-collector: install
	$(BIN)/python -m benchmarks.collector $(if $(BENCH_SECONDS),--seconds $(BENCH_SECONDS),) $(if $(RATE),--rate $(RATE),)

# Prometheus configs, alert rules and their unit tests (promtool: Debian package `prometheus`);
# the Kubernetes overlays rendered by kustomize (`kubectl kustomize`, or a `kustomize`
# binary) and validated against the Kubernetes schemas, strictly.
KUSTOMIZE ?= $(shell command -v kubectl >/dev/null && echo kubectl kustomize || echo kustomize build)
check-deploy: install
	promtool check config deploy/prometheus/prometheus.yml
	promtool check config deploy/prometheus/kubernetes.yml
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml
	@for overlay in dev production; do \
	  echo "kubernetes-validate --strict deploy/k8s/overlays/$$overlay"; \
	  mkdir -p build && $(KUSTOMIZE) deploy/k8s/overlays/$$overlay > build/k8s-$$overlay.yaml || exit 1; \
	  $(BIN)/kubernetes-validate --strict --quiet build/k8s-$$overlay.yaml || exit 1; \
	done

# The image's pinned dependencies (deploy/requirements.lock), resolved from pyproject.toml.
lock: install
	$(BIN)/pip install --quiet 'pip-tools>=7.4,<8'
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
	  --output-file deploy/requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .cdp-data *.egg-info .kafka
