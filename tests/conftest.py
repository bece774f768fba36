"""Shared fixtures. Integration tests talk to the lab's real servers on 127.0.0.1.

The session ``lab`` fixture starts the groups a test asks for (``lab.ensure("pg", "api")``)
once per session and stops everything it started at the end. To reuse a lab that is already
running (faster iteration), point ``SFOPS_TEST_LAB_DIR`` at its directory: it is then left
running. The default test lab lives in ``.lab-test/`` with its own ports (base 17400), so it
never touches the demo lab in ``.lab/`` (under pytest-xdist, worker gwN's in ``.lab-test-gwN``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.lab import ops, registry
from deploy.lab.core import Component, Lab

REPO = Path(__file__).resolve().parent.parent
# Under pytest-xdist (`make test` runs the lab-bound tests in two workers, whole files each)
# every worker has a lab of its own: gw0 the usual .lab-test on the base port, gwN
# .lab-test-gwN 100 ports above per N (a lab uses offsets 0..48; tests that start a second
# lab put it at +50).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(WORKER[2:]) if WORKER.startswith("gw") and WORKER[2:].isdigit() else 0
TEST_PORT_BASE = int(os.environ.get("SFOPS_TEST_PORT_BASE", "17400")) + 100 * WORKER_INDEX
TEST_LAB_DIR = REPO / (".lab-test" if WORKER_INDEX == 0 else f".lab-test-{WORKER}")


class LabHandle:
    """What tests use: start groups, stop/start components, read the written config."""

    def __init__(self, lab: Lab, *, owned: bool) -> None:
        self.lab = lab
        self.owned = owned
        self._lock = threading.Lock()
        self._ensured: set[str] = set()

    @property
    def dir(self) -> Path:
        return self.lab.dir

    @property
    def config_path(self) -> Path:
        return self.lab.config_path

    def port(self, offset: int) -> int:
        return self.lab.port(offset)

    def ensure(self, *groups: str) -> LabHandle:
        """Bring these groups up (idempotent; also restarts members a test left stopped)."""
        with self._lock:
            ops.up(self.lab, list(groups))
            self._ensured.update(groups)
        return self

    def component(self, name: str) -> Component:
        return registry.by_name(name)

    def stop(self, name: str, *, kill: bool = False) -> None:
        ops.stop(self.lab, name, kill=kill)

    def start(self, name: str) -> None:
        ops.start(self.lab, name)

    def running(self, name: str) -> bool:
        return registry.by_name(name).running(self.lab)

    def pid(self, name: str) -> int | None:
        return registry.by_name(name).pid(self.lab)

    def config(self) -> Any:
        from backends.config import load

        return load(self.config_path)

    def sfops(
        self, *args: str, timeout: float = 120.0, config: Path | None = None, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `sfops` CLI against this lab's configuration (or ``config``)."""
        return run_sfops(config or self.config_path, *args, timeout=timeout, **kwargs)

    def sfops_json(
        self, *args: str, timeout: float = 180.0, config: Path | None = None
    ) -> tuple[int, Any, str]:
        """`sfops ARGS` that must print one JSON document: (exit code, document, stderr)."""
        return sfops_json(config or self.config_path, *args, timeout=timeout)


def run_sfops(config: Path, *args: str, timeout: float = 120.0,
              **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """The real `sfops` CLI with this configuration file."""
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "--config", str(config), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False, **kwargs,
    )


def sfops_json(config: Path, *args: str, timeout: float = 180.0) -> tuple[int, Any, str]:
    """`sfops ARGS` that must print one JSON document on stdout, whatever its exit code:
    (exit code, document, stderr). No JSON fails the test with the command and both streams."""
    done = run_sfops(config, *args, timeout=timeout)
    try:
        return done.returncode, json.loads(done.stdout), done.stderr
    except ValueError:
        pytest.fail(f"sfops {' '.join(args)}: no JSON (rc {done.returncode}): "
                    f"{done.stdout!r}\n{done.stderr}")


# `make test` runs two pytests side by side: ``--part lab`` (everything that needs the lab, one
# test at a time: they share it) and ``--part beside`` (the unit tests and the UI tests that use
# fakes, never the lab). The split is made here, so the two are always complementary.
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--part", choices=("lab", "beside"), default=None,
                     help="run only the lab-bound tests, or only those that never touch the lab")


def runs_beside(item: pytest.Item) -> bool:
    parts = Path(str(item.path)).relative_to(REPO).parts
    if parts[:2] == ("tests", "unit"):
        return True
    return parts[:2] == ("tests", "ui") and item.get_closest_marker("integration") is None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    part = config.getoption("--part")
    if part is None:
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (keep if runs_beside(item) == (part == "beside") else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[LabHandle]:
    if request.config.getoption("--part") == "beside":
        pytest.fail("this test uses the lab: mark it integration (it runs beside the lab-bound "
                    "tests, which share the lab)")
    reuse = os.environ.get("SFOPS_TEST_LAB_DIR")
    if reuse:
        handle = LabHandle(Lab.open(Path(reuse)), owned=False)
    else:
        handle = LabHandle(Lab.open(TEST_LAB_DIR, port_base=TEST_PORT_BASE), owned=True)
    yield handle
    if handle.owned:
        ops.down(handle.lab)


@pytest.fixture(autouse=True)
def _no_known_secrets() -> Iterator[None]:
    """Each test starts with no known secret values (backends.secrets.remember): one test's
    configuration must not redact another's text."""
    from backends.secrets import forget_all

    forget_all()
    yield
    forget_all()
