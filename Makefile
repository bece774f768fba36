# StreamForge Ops — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SFOPS := $(VENV)/bin/sfops
TEST_LAB := .lab-test
UNIT_LOG := $(TEST_LAB)/unit-tests.log
# Lab-bound tests run in this many pytest-xdist workers, whole files each, one lab per worker
# (.lab-test, .lab-test-gw1, …: tests/conftest.py). 1: one pytest, one lab.
LAB_WORKERS ?= 2
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

# The unit tests and the UI tests that use fakes need no lab: they run beside the lab-bound
# tests (one pytest each, split by tests/conftest.py's --part; a test of the beside part that
# asks for the lab fails). The lab-bound tests share a lab within a worker, one test at a time;
# LAB_WORKERS labs run side by side, each worker taking whole files (--dist loadfile). With
# PYTEST_ARGS (a selection) everything runs in one pytest, as asked. pytest's exit code 5 (no
# test collected) is a failure here: tests must exist.
test-only:
	@if [ -n "$(PYTEST_ARGS)" ]; then \
	  rc=0; $(PY) -m pytest -q -ra --durations=25 $(PYTEST_ARGS) || rc=$$?; urc=0; \
	else \
	  mkdir -p $(TEST_LAB); $(PY) -m pytest -q -ra -p no:cacheprovider --part beside > $(UNIT_LOG) 2>&1 & upid=$$!; \
	  workers=""; if [ "$(LAB_WORKERS)" -gt 1 ]; then workers="-n $(LAB_WORKERS) --dist loadfile"; fi; \
	  rc=0; $(PY) -m pytest -q -ra --durations=25 --part lab $$workers || rc=$$?; \
	  urc=0; wait $$upid || urc=$$?; \
	  echo "------------------- unit and lab-free UI tests (run beside) -------------------"; \
	  cat $(UNIT_LOG); \
	fi; \
	for dir in $(TEST_LAB) $(TEST_LAB)-gw*; do \
	  if [ -d "$$dir" ]; then $(SFOPS) lab --dir "$$dir" down >/dev/null 2>&1 || true; fi; \
	done; \
	for code in $$rc $$urc; do \
	  if [ $$code -eq 5 ]; then echo "pytest collected no tests: that is a failure here, tests must exist" >&2; exit 1; fi; \
	done; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$urc

clean: lab-down
	rm -rf .lab .lab-test .lab-test-gw*
