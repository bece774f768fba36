# StreamForge Ops — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SFOPS := $(VENV)/bin/sfops
TEST_LAB := .lab-test
PYTEST_ARGS ?=

.PHONY: install install-base install-kafka install-k8s install-lint demo lab-up lab-down lint test test-only clean

install: install-base install-kafka install-k8s install-lint

install-base:
	@bash deploy/lab/install/base.sh

install-kafka: install-base
	@bash deploy/lab/install/kafka.sh

install-k8s: install-base
	@bash deploy/lab/install/k8s.sh

# dclint (Compose Specification schema check) from the npm registry, cached outside the repo.
install-lint:
	@bash deploy/lab/install/lint-tools.sh

# Install, start the whole lab, open sfops on it.
demo: install lab-up
	$(SFOPS) --config .lab/sfops.toml

lab-up: install
	$(SFOPS) lab up

lab-down:
	-$(SFOPS) lab down

lint:
	$(VENV)/bin/ruff check backends tui deploy tests
	$(VENV)/bin/mypy backends tui
	$(VENV)/bin/lint-imports

# Install, lint, run every test (fixtures start the lab components they need), stop the lab.
test: install
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test-only

test-only:
	@rc=0; $(PY) -m pytest -q -ra --durations=25 $(PYTEST_ARGS) || rc=$$?; \
	$(SFOPS) lab --dir $(TEST_LAB) down >/dev/null 2>&1 || true; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here, tests must exist" >&2; exit 1; fi; \
	exit $$rc

clean: lab-down
	rm -rf .lab .lab-test
