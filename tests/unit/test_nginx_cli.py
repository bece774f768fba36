"""tui/commands/_action.py (the CLI action runner nginx, pg, kafka and k8s share) with a fake
action: confirmation, refusal, JSON outcome, exit codes and exactly one audit record."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from backends.actions import Action, ActionRunner, CheckResult, Step
from backends.config import parse
from tui import exitcodes
from tui.commands._action import run_action


class Fake(Action):
    name = "fake.poke"
    destructive = True

    def __init__(self, target: str, *, fail_preflight: bool = False) -> None:
        super().__init__(target, {"member": target})
        self.fail_preflight = fail_preflight
        self.executed = False

    async def preflight(self) -> list[CheckResult]:
        if self.fail_preflight:
            return [CheckResult.failed("target healthy", "no")]
        return [CheckResult.passed("target healthy", "yes")]

    async def execute(self) -> AsyncIterator[Step]:
        self.executed = True
        yield Step("poking", 0.5)


def config(tmp_path: Path, read_only: bool = False):
    text = f'[sfops]\naudit_log = "{tmp_path}/audit.jsonl"\nread_only = {str(read_only).lower()}\n'
    return parse(text, tmp_path / "sfops.toml")


def args(**kw: object) -> argparse.Namespace:
    base = {"yes": False, "json": False, "force": False, "read_only": False}
    base.update(kw)
    return argparse.Namespace(**base)


async def run(tmp_path: Path, action: Action, answer: str = "", read_only: bool = False,
              **kw: object) -> tuple[int, str, str, list[dict]]:
    cfg = config(tmp_path, read_only)

    async def build(c, runner: ActionRunner, stack: AsyncExitStack) -> Action:
        runner.check_allowed(type(action))
        return action

    out, err = io.StringIO(), io.StringIO()
    code = await run_action(args(**kw), cfg, build, stdin=io.StringIO(answer), out=out, err=err)
    log = tmp_path / "audit.jsonl"
    raw = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    records = [r for r in raw if r.get("event") != "started"]  # the outcomes
    return code, out.getvalue(), err.getvalue(), records


async def test_destructive_needs_the_name_typed(tmp_path: Path) -> None:
    action = Fake("api-3")
    code, _, err, records = await run(tmp_path, action, answer="y\n")
    assert code == exitcodes.REFUSED and not action.executed and records == []
    assert "Type 'api-3'" in err and "[ok  ] target healthy" in err
    code, out, err, records = await run(tmp_path, action, answer="api-3\n")
    assert code == exitcodes.OK and action.executed
    assert "[ 50%] poking" in err and "succeeded" in out
    assert [(r["action"], r["outcome"]) for r in records] == [("fake.poke", "succeeded")]


async def test_eof_is_not_a_yes(tmp_path: Path) -> None:
    code, _, _, records = await run(tmp_path, Fake("x"), answer="")
    assert code == exitcodes.REFUSED and records == []


async def test_failed_preflight_is_refused_and_audited(tmp_path: Path) -> None:
    action = Fake("x", fail_preflight=True)
    code, out, _, records = await run(tmp_path, action, yes=True, json=True)
    assert code == exitcodes.REFUSED and not action.executed
    assert json.loads(out)["outcome"] == "refused"
    assert [r["outcome"] for r in records] == ["refused"]
    code, out, _, records = await run(tmp_path, action, yes=True, json=True, force=True)
    assert code == exitcodes.OK and action.executed
    outcome = json.loads(out)
    assert outcome["forced"] is True and outcome["preflight"][0]["status"] == "fail"
    assert [r["forced"] for r in records] == [False, True]


async def test_read_only_builds_nothing(tmp_path: Path) -> None:
    code, _, err, records = await run(tmp_path, Fake("x"), yes=True, read_only=True)
    assert code == exitcodes.READ_ONLY and "read-only" in err and records == []


@pytest.mark.parametrize("flag", [True, False])
def test_cli_read_only_flag_exits_4_before_building(tmp_path: Path, flag: bool,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli import main

    path = tmp_path / "sfops.toml"
    path.write_text(
        f'[sfops]\naudit_log = "{tmp_path}/a.jsonl"\nread_only = {str(not flag).lower()}\n'
        '[nginx]\nconfig_file = "/nonexistent/nginx.conf"\nupstream_name = "u"\n'
        'upstream_file = "/nonexistent/u.conf"\n'
        '[nginx.members.a]\naddress = "127.0.0.1:1"\n')
    argv = ["--config", str(path), *(["--read-only"] if flag else []), "nginx", "drain", "a",
            "--yes"]
    assert main(argv) == exitcodes.READ_ONLY
    assert not (tmp_path / "a.jsonl").exists()


def test_cli_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli import main

    path = tmp_path / "sfops.toml"
    path.write_text("[sfops]\nrefresh_intreval = 1\n")
    assert main(["--config", str(path), "status"]) == exitcodes.USAGE
    assert main(["--config", str(path), "nginx", "drain", "a", "--yes"]) == exitcodes.USAGE
    assert main(["--config", str(path), "audit"]) == exitcodes.USAGE
    err = capsys.readouterr().err
    assert f"{path}: sfops.refresh_intreval: unknown key" in err
