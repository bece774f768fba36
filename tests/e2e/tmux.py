"""Drive `sfops` as a person would: in tmux, over a real SSH session to the lab's sshd."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path


class TmuxSession:
    def __init__(self, command: list[str], *, width: int = 80, height: int = 24) -> None:
        self.name = f"sfops-e2e-{uuid.uuid4().hex[:8]}"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
             shlex.join(command)],
            check=True,
            env={"TERM": "xterm-256color", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        )
        subprocess.run(["tmux", "set-option", "-t", self.name, "remain-on-exit", "on"],
                       check=False)

    def screen(self, *, escapes: bool = False) -> str:
        """The pane's text; ``escapes``: with the escape sequences of each cell's attributes
        (``capture-pane -e``: SGR colours and styles, as tmux writes them)."""
        done = subprocess.run(["tmux", "capture-pane", "-p", *(["-e"] if escapes else []),
                               "-t", self.name], capture_output=True, text=True, check=False)
        return done.stdout

    def send(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def type(self, text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)

    def wait_for(self, needle: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if needle in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} not on screen after {timeout}s; screen:\n{screen}")

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False,
                       capture_output=True)


def ssh_sfops_command(lab_dir: Path, port: int, *sfops_args: str,
                      config: Path | None = None) -> list[str]:
    """`ssh -t` to the lab's sshd as its operator user, running this checkout's sfops (on
    the lab's configuration unless ``config`` names another, readable by that user)."""
    ssh_dir = lab_dir / "ssh"
    sfops = Path(sys.executable).parent / "sfops"
    config = config or lab_dir / "sfops.toml"
    remote = shlex.join([str(sfops), "--config", str(config), *sfops_args])
    return [
        "ssh", "-t",
        "-i", str(ssh_dir / "id_ed25519"),
        "-o", f"UserKnownHostsFile={ssh_dir / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "SendEnv=TERM",
        "-p", str(port),
        "sfops-lab@127.0.0.1",
        remote,
    ]
