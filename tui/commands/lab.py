"""`sfops lab …`: run the deploy/ stack as real local processes (see README, "The lab")."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tui import exitcodes

if TYPE_CHECKING:
    from deploy.lab.core import Lab


def default_lab_dir() -> Path:
    if env := os.environ.get("SFOPS_LAB_DIR"):
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists() and (checkout / "deploy").is_dir():
        return checkout / ".lab"
    return Path.cwd() / ".lab"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = subparsers.add_parser("lab", help="run the stack locally as real processes")
    lab.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="lab state directory (default .lab/ at the repo root)",
    )
    lab.add_argument(
        "--port-base",
        type=int,
        default=None,
        help="first port; components use base+offset (default 15400)",
    )
    actions = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")

    up = actions.add_parser("up", help="start components (idempotent) and write <dir>/sfops.toml")
    up.add_argument(
        "--only",
        action="append",
        metavar="COMPONENTS",
        help="comma-separated names or groups (pg, api, nginx, sshd, kafka, k8s)",
    )
    up.add_argument(
        "--k8s-nodes", type=int, default=None, help="kwok nodes to simulate (default 3)"
    )
    up.add_argument(
        "--k8s-pods",
        type=int,
        default=None,
        help="scale mode: pods spread over several Deployments",
    )
    up.set_defaults(func=_up)

    status = actions.add_parser("status", help="list components with state, pid and address")
    from tui.commands.backend import add_output

    add_output(status)
    status.set_defaults(func=_status)

    stop = actions.add_parser("stop", help="stop one component")
    stop.add_argument("name")
    stop.add_argument(
        "--kill", action="store_true", help="SIGKILL the process group (a crash), no clean shutdown"
    )
    stop.add_argument("--json", action="store_true", help="how it stopped, as JSON")
    stop.set_defaults(func=_stop)

    start = actions.add_parser("start", help="start one component and wait until it is ready")
    start.add_argument("name")
    start.set_defaults(func=_start)

    hang = actions.add_parser(
        "hang", help="SIGSTOP one component's processes: a hung server (undo with resume)")
    hang.add_argument("name")
    hang.set_defaults(func=_hang)

    resume = actions.add_parser("resume", help="SIGCONT one component's processes")
    resume.add_argument("name")
    resume.set_defaults(func=_resume)

    down = actions.add_parser(
        "down",
        help="stop every component; returns when all their processes have exited",
        description="Stop every running component (groups in parallel) and wait until each of "
        "their processes has exited; what outlives its grace period is SIGKILLed and named. "
        "Exit 0 when nothing is left running.",
    )
    down.add_argument("--json", action="store_true", help="the stop report as JSON")
    down.set_defaults(func=_down)


def _open(args: argparse.Namespace) -> Lab:
    from deploy.lab.core import Lab

    return Lab.open(
        args.dir or default_lab_dir(),
        port_base=args.port_base,
        k8s_nodes=getattr(args, "k8s_nodes", None),
        k8s_pods=getattr(args, "k8s_pods", None),
    )


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from deploy.lab.core import LabError

        try:
            return int(func(args))
        except LabError as exc:
            print(f"sfops lab: {exc}", flush=True)
            return exitcodes.DEGRADED

    return run


@_guard
def _up(args: argparse.Namespace) -> int:
    from deploy.lab import ops

    lab = _open(args)
    ops.up(lab, args.only)
    print(f"lab is up; run: sfops --config {lab.config_path}")
    return exitcodes.OK


@_guard
def _status(args: argparse.Namespace) -> int:
    from deploy.lab import ops

    rows = ops.status(_open(args))
    if args.output != "table":
        from tui.commands.backend import print_document

        print_document(rows, args.output, sys.stdout)
    else:
        width = max((len(r["name"]) for r in rows), default=4)
        for row in rows:
            pid = row["pid"] if row["pid"] is not None else "-"
            print(f"{row['name']:<{width}}  {row['state']:<8} pid {pid!s:<8} {row['address']}")
    return exitcodes.OK


@_guard
def _stop(args: argparse.Namespace) -> int:
    from deploy.lab import ops

    row = ops.stop(_open(args), args.name, kill=args.kill)
    code = exitcodes.DEGRADED if row["stop"]["left_pids"] else exitcodes.OK
    if args.json:
        print(json.dumps(row, indent=2))
        return code
    line = f"{row['name']}: {row['state']}"
    if row["stop"]["had_to_kill"]:
        line += f" (had to SIGKILL pid {', '.join(map(str, row['stop']['killed_pids']))})"
    print(line)
    return code


@_guard
def _start(args: argparse.Namespace) -> int:
    from deploy.lab import ops

    row = ops.start(_open(args), args.name)
    print(f"{row['name']}: {row['state']} (pid {row['pid']}) at {row['address']}")
    return exitcodes.OK


@_guard
def _hang(args: argparse.Namespace) -> int:
    from deploy.lab import faults

    pids = faults.hang(_open(args), args.name)
    print(f"{args.name}: hung (SIGSTOP to pid {', '.join(map(str, pids))})")
    return exitcodes.OK


@_guard
def _resume(args: argparse.Namespace) -> int:
    from deploy.lab import faults

    pids = faults.resume(_open(args), args.name)
    print(f"{args.name}: resumed (SIGCONT to pid {', '.join(map(str, pids))})")
    return exitcodes.OK


@_guard
def _down(args: argparse.Namespace) -> int:
    from deploy.lab import ops

    report = ops.down(_open(args))
    left = [r["name"] for r in report["components"] if r["state"] == "running"]
    code = exitcodes.DEGRADED if left or report["left"] else exitcodes.OK
    if args.json:
        print(json.dumps({**report, "down": code == exitcodes.OK}, indent=2))
        return code
    if report["killed"]:
        print(f"had to SIGKILL: {', '.join(report['killed'])}")
    if left or report["left"]:
        print(f"still running: {', '.join(sorted(set(left) | set(report['left'])))}")
        return code
    print("lab is down")
    return code
