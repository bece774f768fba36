"""deploy/Dockerfile.api and deploy/Dockerfile.sfops: pinned slim base, multi-stage, non-root,
binary wheels only, a context filter that keeps secrets and lab state out of the build."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCKERFILES = ("Dockerfile.api", "Dockerfile.sfops")


def stages(text: str) -> list[str]:
    """The Dockerfile split at each FROM (continuation lines joined)."""
    joined = re.sub(r"\\\n", " ", text)
    return re.split(r"^(?=FROM )", joined, flags=re.M)[1:]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_is_a_pinned_slim_python(name: str) -> None:
    text = (DEPLOY / name).read_text()
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert match, "the base image is one ARG, shared by both stages"
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", match.group(1)), match.group(1)
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(base == "${PYTHON_IMAGE}" for base in froms), froms


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runtime_stage_is_non_root_and_free_of_build_tools(name: str) -> None:
    text = (DEPLOY / name).read_text()
    build, runtime = stages(text)
    assert " AS build" in build.splitlines()[0]
    user = re.findall(r"^USER (\S+)$", runtime, re.M)
    assert user, "runtime stage sets no USER"
    uid = user[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "numeric, non-root (runAsNonRoot can verify it)"
    # Nothing compiles: dependencies come as wheels, and no package manager runs in the image.
    assert "--only-binary=:all:" in build
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "pip install"):
        assert tool not in runtime, f"{tool!r} in the runtime stage"
    assert "COPY --from=build /opt/venv /opt/venv" in runtime


def test_api_image_runs_the_service_as_the_lab_and_kubernetes_do() -> None:
    text = (DEPLOY / "Dockerfile.api").read_text()
    assert re.search(
        r'^CMD \["python", "-m", "deploy.api", "--host", "0.0.0.0", "--port", "8000"\]$', text, re.M
    )
    assert re.search(r"^USER 10001:10001$", text, re.M)  # the Deployment's runAsUser
    assert "compileall" in text  # the Deployment's root filesystem is read-only


@pytest.mark.parametrize("name", DOCKERFILES)
def test_build_context_is_filtered(name: str) -> None:
    ignore = (DEPLOY / f"{name}.dockerignore").read_text().splitlines()
    assert "*" in ignore, "deny by default, then allow what the image needs"
    allowed = [line[1:] for line in ignore if line.startswith("!")]
    for path in allowed:
        assert not path.startswith((".lab", ".venv", ".env")), path
    if "deploy/" in allowed:
        assert "deploy/.env" in ignore
