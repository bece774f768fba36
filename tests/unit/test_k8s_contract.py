"""The Kubernetes contract: one build for the TUI's row keys and the CLI's names, clear
ValueErrors for bad input, the palette's targets, the options, and the generated `sfops k8s`
commands (help, --dry-run, exit codes, the status envelope)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from backends.actions import ActionRunner, ReadOnlyError
from backends.audit import AuditLog
from backends.config import ConfigError, SfopsConfig, parse
from backends.kubernetes import contract
from backends.kubernetes.model import ClusterStatus, build_status
from backends.kubernetes.nodes import DrainNode
from backends.kubernetes.objects import (
    budget_from_json,
    deployment_from_json,
    node_from_json,
    pod_from_json,
    replicaset_from_json,
)
from backends.kubernetes.rollout import ScaleDeployment, SetImage, UndoDeployment
from tests.unit.test_contract import run_cli
from tests.unit.test_k8s_actions import DEPLOY, FakeApi
from tests.unit.test_k8s_objects import budget, deployment, node, pod, replicaset
from tui import exitcodes

BACKEND = contract.BACKEND


def config_text(tmp_path: Path, namespaces: str = '["streamforge", "other"]',
                kubeconfig: Path | None = None) -> str:
    text = (f'[sfops]\naudit_log = "{tmp_path}/audit.jsonl"\nstate_dir = "{tmp_path}/state"\n'
            f'[kubernetes]\nnamespaces = {namespaces}\n')
    if kubeconfig is not None:
        text += f'kubeconfig = "{kubeconfig}"\n'
    return text


def status(nodes: int = 2) -> ClusterStatus:
    from datetime import UTC, datetime

    return build_status(
        host="https://k", namespaces=("streamforge",), now=datetime(2026, 1, 1, tzinfo=UTC),
        deployments=[deployment_from_json(deployment(replicas=3))],
        replicasets=[replicaset_from_json(replicaset("api-abcde", 2))],
        pods=[pod_from_json(pod("api-abcde-0", node="node-1")),
              pod_from_json(pod("bare", node="node-2", owner=None, labels={"app": "x"}))],
        nodes=[node_from_json(node(f"node-{i}")) for i in range(1, nodes + 1)],
        budgets=[budget_from_json(budget())], events=[],
    )


class Context:
    """The ActionContext: the TUI's (a last status) or the CLI's (None)."""

    def __init__(self, config: SfopsConfig, last: ClusterStatus | None = None, *,
                 read_only: bool = False) -> None:
        self.config = config
        self.runner = ActionRunner(AuditLog(config.sfops.audit_log), read_only=read_only)
        self.api = FakeApi()
        self.breaker = object()
        self.last = last

    def service(self, backend: str) -> Any:
        assert backend == "kubernetes"
        return SimpleNamespace(client=self.api, breaker=self.breaker,
                               operator_client=lambda: self.api)

    def status(self, backend: str) -> Any:
        return self.last


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context(parse(config_text(tmp_path), tmp_path / "sfops.toml"), status())


def build(context: Context, command: str, target: str, **params: Any) -> Any:
    spec = BACKEND.spec(command)
    return spec.build(context, target, {**spec.defaults(), **params})


# ----------------------------------------------------------------------------- targets


@pytest.mark.parametrize(("target", "params", "where"), [
    ("deploy:streamforge/api", {}, ("streamforge", "api")),
    ("deploy:other/web", {}, ("other", "web")),
    ("pod:streamforge/api-abcde-0", {}, ("streamforge", "api")),  # its Deployment
    ("api", {}, ("streamforge", "api")),  # the first configured namespace
    ("api", {"namespace": "other"}, ("other", "api")),  # -n
])
def test_a_deployment_target_in_either_form(context, target, params, where):
    action = build(context, "restart", target, **params)
    assert (action.namespace, action.deployment) == where
    assert action.api.client is context.api and action.api.breaker is context.breaker
    assert action.timeout == contract.DEFAULT_ROLLOUT_TIMEOUT


@pytest.mark.parametrize(("target", "message"), [
    ("node:node-1", "select a deployment"),
    ("pod:streamforge/bare", "pod streamforge/bare belongs to no Deployment"),
    ("deploy:api", "expected NAMESPACE/NAME"),
    ("Api", "not a valid deployment name"),
    ("../../nodes/x", "not a valid deployment name"),
    ("svc:streamforge/api", "is not a deployment"),
    ("", "no target given"),
])
def test_a_bad_deployment_target_is_a_clear_error(context, target, message):
    with pytest.raises(ValueError, match=message):
        build(context, "restart", target)


def test_a_namespace_must_be_named_when_all_are_watched(tmp_path):
    config = parse(config_text(tmp_path, '["*"]'), tmp_path / "sfops.toml")
    with pytest.raises(ValueError, match="-n NAMESPACE"):
        build(Context(config), "pause", "api")
    assert build(Context(config), "pause", "api", namespace="prod").namespace == "prod"
    with pytest.raises(ValueError, match="not a valid namespace"):
        build(Context(config), "pause", "api", namespace="a/b")


@pytest.mark.parametrize(("target", "name"), [
    ("node:node-2", "node-2"), ("node-2", "node-2"),
    ("pod:streamforge/bare", "node-2"),  # the node it runs on
])
def test_a_node_target_in_either_form(context, target, name):
    for command in ("cordon", "uncordon", "drain"):
        assert build(context, command, target).node == name


def test_a_bad_node_target_is_a_clear_error(context):
    with pytest.raises(ValueError, match="select a node"):
        build(context, "drain", "deploy:streamforge/api")
    with pytest.raises(ValueError, match="is on no node"):
        build(context, "cordon", "pod:streamforge/gone")
    with pytest.raises(ValueError, match="not a valid node name"):
        build(context, "cordon", "node:a b")


# ----------------------------------------------------------------------------- params


def test_set_image_takes_container_equals_image(context):
    action = build(context, "set-image", "api", assignment="api=r/api:2")
    assert isinstance(action, SetImage)
    assert (action.container, action.image) == ("api", "r/api:2")
    with pytest.raises(ValueError, match="expected CONTAINER=IMAGE, got 'r/api:2'"):
        build(context, "set-image", "api", assignment="r/api:2")
    with pytest.raises(ValueError, match="invalid image reference 'Not A:Ref'"):
        build(context, "set-image", "api", assignment="api=Not A:Ref")


def test_undo_to_revision(context):
    assert build(context, "undo", "api").to_revision is None
    action = build(context, "undo", "api", to_revision=2)
    assert isinstance(action, UndoDeployment) and action.to_revision == 2
    with pytest.raises(ValueError, match="--to-revision must be >= 1"):
        build(context, "undo", "api", to_revision=0)


def test_scale_to_n_and_the_tuis_plus_minus(context):
    action = build(context, "scale", "api", replicas=5)
    assert isinstance(action, ScaleDeployment) and action.replicas == 5
    with pytest.raises(ValueError, match="replicas must be >= 0"):
        build(context, "scale", "api", replicas=-1)
    # + / -: desired ± 1 from the last status, as the screen shows it.
    assert build(context, "scale-up", "deploy:streamforge/api").replicas == 4
    assert build(context, "scale-down", "pod:streamforge/api-abcde-0").replicas == 2
    with pytest.raises(ValueError, match="not known yet"):
        build(context, "scale-up", "deploy:streamforge/web")
    # No last status (the CLI): the preflight reads the live count.
    cli_context = Context(context.config)
    relative = build(cli_context, "scale-down", "api")
    assert relative.replicas is None and relative.step == -1


def test_scale_down_from_zero_is_refused(tmp_path):
    from dataclasses import replace

    last = status()
    at_zero = replace(last.deployments[0], info=replace(last.deployments[0].info, desired=0))
    context = Context(parse(config_text(tmp_path), tmp_path / "sfops.toml"),
                      replace(last, deployments=(at_zero,)))
    with pytest.raises(ValueError, match="already scaled to 0"):
        build(context, "scale-down", "deploy:streamforge/api")


def test_drain_params(context):
    action = build(context, "drain", "node-1", timeout=30.0, grace_period=5)
    assert isinstance(action, DrainNode)
    assert (action.timeout, action.grace_period) == (30.0, 5)
    assert build(context, "drain", "node-1").timeout == contract.DEFAULT_DRAIN_TIMEOUT
    with pytest.raises(ValueError, match="--timeout must be > 0"):
        build(context, "drain", "node-1", timeout=0)


def test_read_only_cannot_build_any_action(tmp_path):
    context = Context(parse(config_text(tmp_path), tmp_path / "sfops.toml"), status(),
                      read_only=True)
    for spec in BACKEND.actions:
        target = "node-1" if spec.target is contract.NODE else "deploy:streamforge/api"
        params = {**spec.defaults(), "replicas": 2, "assignment": "api=r/api:2"}
        with pytest.raises(ReadOnlyError):
            spec.build(context, target, params)


# ----------------------------------------------------------------------------- declaration


def test_keys_palette_and_cli_only_specs():
    keys = {s.command: s.key for s in BACKEND.actions if s.in_tui}
    assert keys == {"restart": "R", "undo": "U", "pause": "p", "resume": "P",
                    "scale-up": "plus", "scale-down": "minus", "cordon": "c",
                    "uncordon": "C", "drain": "D"}
    assert {s.command for s in BACKEND.actions if not s.in_tui} == {"set-image", "scale"}
    assert BACKEND.spec("drain").destructive


def test_palette_offers_deployments_and_a_few_nodes(tmp_path):
    config = parse(config_text(tmp_path), tmp_path / "sfops.toml")
    assert contract.DEPLOYMENT.choices(config, status()) == ["deploy:streamforge/api"]
    assert contract.NODE.choices(config, status()) == ["node:node-1", "node:node-2"]
    assert contract.NODE.choices(config, status(nodes=contract.PALETTE_NODES_MAX + 1)) == []
    assert contract.DEPLOYMENT.choices(config, None) == []


def test_configure_sets_the_context_and_the_namespace(tmp_path):
    config = parse(config_text(tmp_path), tmp_path / "sfops.toml")
    assert contract.configure(config, {"namespace": None, "context": None}) is config
    changed = contract.configure(config, {"namespace": "other", "context": "prod"})
    assert changed.kubernetes is not None
    assert (changed.kubernetes.namespaces, changed.kubernetes.context) == (("other",), "prod")
    with pytest.raises(ConfigError, match="-n/--namespace: 'a/b' is not a valid namespace"):
        contract.configure(config, {"namespace": "a/b", "context": None})
    bare = parse(f'[sfops]\naudit_log = "{tmp_path}/a.jsonl"\n', tmp_path / "s.toml")
    assert contract.configure(bare, {"namespace": "x", "context": None}) is bare


def test_status_json_is_redacted():
    data = contract.BACKEND.status_json(status())
    assert data["deployments"][0]["name"] == "api" and data["nodes"]
    from dataclasses import replace

    leaky = replace(status(), host="https://admin:hunter2@k:6443",
                    watch_errors=("pods: GET https://admin:hunter2@k:6443/api failed",))
    text = json.dumps(contract.BACKEND.status_json(leaky))
    assert "hunter2" not in text and "token" not in text.lower()


# ----------------------------------------------------------------------------- CLI




def test_cli_commands_keep_their_flags():
    code, out, _ = run_cli("k8s", "--help")
    assert code == 0
    for command in ("status", "restart", "set-image", "undo", "pause", "resume", "scale",
                    "cordon", "uncordon", "drain"):
        assert command in out
    code, out, _ = run_cli("k8s", "scale", "--help")
    assert code == 0 and "DEPLOYMENT N" in out.replace("\n", " ").replace("  ", " ")
    code, out, _ = run_cli("k8s", "set-image", "--help")
    assert "CONTAINER=IMAGE" in out
    for flag in ("-n NS", "--context C", "--timeout S", "--yes", "--dry-run", "--force"):
        assert flag in out
    code, out, _ = run_cli("k8s", "undo", "--help")
    assert "--to-revision N" in out
    code, out, _ = run_cli("k8s", "drain", "--help")
    assert "--grace-period S" in out and "default 300" in out
    code, out, _ = run_cli("k8s", "status", "--help")
    for flag in ("-n NS", "--context C", "--timeout S", "--json", "-o"):
        assert flag in out


def test_cli_bad_input_exits_2(tmp_path):
    path = tmp_path / "sfops.toml"
    path.write_text(config_text(tmp_path))
    code, _, err = run_cli("--config", str(path), "k8s", "set-image", "api", "nope", "--yes")
    assert code == exitcodes.USAGE and "expected CONTAINER=IMAGE" in err
    code, _, err = run_cli("--config", str(path), "k8s", "undo", "api", "--to-revision", "0",
                           "--yes")
    assert code == exitcodes.USAGE and "--to-revision must be >= 1" in err
    code, _, err = run_cli("--config", str(path), "k8s", "restart", "No_Such", "--yes")
    assert code == exitcodes.USAGE and "not a valid deployment name" in err
    assert not (tmp_path / "audit.jsonl").exists()


class FakeService:
    name = "kubernetes"
    title = "Kubernetes"

    def __init__(self, api: FakeApi) -> None:
        self.client, self.breaker = api, None
        self.closed = 0

    def operator_client(self) -> FakeApi:
        return self.client

    async def close(self) -> None:
        self.closed += 1


def test_cli_dry_run_prints_the_patch_and_changes_nothing(tmp_path, monkeypatch):
    from backends.kubernetes import service as service_module

    api = FakeApi()
    api.objects[DEPLOY] = deployment(replicas=3)
    built: list[FakeService] = []

    def fake_build(config: SfopsConfig) -> FakeService:
        assert config.kubernetes is not None and config.kubernetes.context == "prod"
        built.append(FakeService(api))
        return built[-1]

    monkeypatch.setattr(service_module, "build_service", fake_build)
    path = tmp_path / "sfops.toml"
    path.write_text(config_text(tmp_path))
    code, out, err = run_cli("--config", str(path), "k8s", "scale", "api", "5", "--context",
                             "prod", "--dry-run", "--json")
    assert code == exitcodes.OK, err
    data = json.loads(out)
    assert data["dry_run"] and not data["would_refuse"]
    assert data["plan"][:3] == ["replicas 3 → 5", f"PATCH {DEPLOY}/scale (merge patch)",
                                '{"spec": {"replicas": 5}}']
    assert not [c for c in api.calls if c[0] == "PATCH"]
    assert not (tmp_path / "audit.jsonl").exists()
    assert built and all(s.closed >= 1 for s in built)  # the CLI context closes its service


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": server,
                                                 "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "sekrit-token"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "u"}}],
    }))
    return path


def test_cli_status_of_an_unreachable_api_exits_5_naming_the_host(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = f"https://127.0.0.1:{port}"
    path = tmp_path / "sfops.toml"
    path.write_text(config_text(tmp_path, kubeconfig=_kubeconfig(tmp_path, server)))
    code, out, _ = run_cli("--config", str(path), "k8s", "status", "--timeout", "10")
    assert code == exitcodes.UNREACHABLE
    assert f"Kubernetes unreachable: API server {server}" in out
    code, out, _ = run_cli("--config", str(path), "k8s", "status", "--json", "--timeout", "10")
    assert code == exitcodes.UNREACHABLE
    data = json.loads(out)
    assert data["backend"] == "kubernetes" and not data["reachable"]
    assert server in data["error"] and data["status"] is None
    assert "sekrit" not in out
