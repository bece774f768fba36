"""Key press to paint, measured at the terminal: ``sfops`` runs in a pseudo-terminal of the given
size, a reader thread timestamps every byte it writes; a key is written to the terminal and the
latency is the time until the changed screen has reached the terminal.

    python -m tests.perf.bench_paint --lab-dir .lab [--sizes 80x24,200x60] [--presses 40]
        [--hang kube-apiserver] [--k8s-table]

Two figures per key: the first byte written after the key (what a person sees start to
change) and the moment the repaint holds the new screen's marker text ("sfops keys" for the
help screen that `?` opens). The cursor key (`--k8s-table`: on the Kubernetes screen while its
table updates from watches) has no marker: its figure is the first byte after the key, with
presses spaced so a periodic repaint rarely coincides. ``--hang`` SIGSTOPs one lab component
for the run (a hung backend) and resumes it after. Prints a last line ``RATIO paint_p95_vs_50ms
<worst p95 / 50 ms>``. Not a pytest module: run by hand (asserts nothing).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HELP_MARKER = b"sfops keys"
TARGET_MS = 50.0
CURSOR_DOWN, CURSOR_UP = b"\x1b[B", b"\x1b[A"


class Terminal:
    """``sfops`` in a pseudo-terminal; every chunk it writes is kept with its arrival time."""

    def __init__(self, config: Path, columns: int, lines: int) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        sfops = Path(sys.executable).with_name("sfops")
        self.process = subprocess.Popen([str(sfops), "--config", str(config), "--read-only"],
                                        stdin=slave, stdout=slave, stderr=slave, env=env,
                                        start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master
        self.chunks: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            now = time.monotonic()
            with self._lock:
                self.chunks.append((now, data))

    def mark(self) -> int:
        with self._lock:
            return len(self.chunks)

    def since(self, index: int) -> list[tuple[float, bytes]]:
        with self._lock:
            return self.chunks[index:]

    def write(self, data: bytes) -> float:
        sent = time.monotonic()
        os.write(self.master, data)
        return sent

    def wait_for(self, marker: bytes, since: int, timeout: float) -> float | None:
        """When the output after chunk ``since`` first held ``marker`` (None: timed out)."""
        # Scanned once per chunk (a start's output is hundreds of kilobytes: re-joining it
        # every 2 ms would take the CPU from the sfops being measured), keeping the last
        # bytes of the previous chunk for a marker cut across two.
        deadline = time.monotonic() + timeout
        tail, index = b"", since
        while time.monotonic() < deadline:
            for stamp, data in self.since(index):
                index += 1
                if marker in tail + data:
                    return stamp
                tail = (tail + data)[-(len(marker) - 1):] if len(marker) > 1 else b""
            time.sleep(0.002)
        return None

    def first_byte(self, since: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunks = self.since(since)
            if chunks:
                return chunks[0][0]
            time.sleep(0.001)
        return None

    def quiet(self, seconds: float, timeout: float = 10.0) -> None:
        """Until nothing was written for ``seconds``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.since(max(0, self.mark() - 1))
            if not last or time.monotonic() - last[-1][0] >= seconds:
                return
            time.sleep(0.02)

    def close(self) -> None:
        self.write(b"q")
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(5)
        self._stop = True
        self._reader.join(2)
        os.close(self.master)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)]


def help_presses(term: Terminal, presses: int) -> tuple[list[float], list[float]]:
    """`?` opens the help screen (timed), Esc closes it (not timed: a lone Esc waits for the
    rest of a possible escape sequence by design)."""
    first, full = [], []
    for _ in range(presses):
        term.quiet(0.15, timeout=2.0)
        index = term.mark()
        sent = term.write(b"?")
        shown = term.wait_for(HELP_MARKER, index, 5.0)
        byte = term.first_byte(index, 0.1)
        if shown is None or byte is None:
            print("  (no help screen within 5 s)")
            continue
        full.append((shown - sent) * 1000)
        first.append((byte - sent) * 1000)
        time.sleep(0.05)
        term.write(b"\x1b")
        time.sleep(0.4)
    return first, full


def cursor_presses(term: Terminal, presses: int) -> list[float]:
    first = []
    for number in range(presses):
        term.quiet(0.15, timeout=2.0)
        index = term.mark()
        sent = term.write(CURSOR_DOWN if number % 40 < 20 else CURSOR_UP)
        byte = term.first_byte(index, 5.0)
        if byte is not None:
            first.append((byte - sent) * 1000)
        time.sleep(0.1)
    return first


def line(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<44} no samples"
    return (f"{label:<44} median {statistics.median(values):6.1f} ms  p95 {p95(values):6.1f} ms"
            f"  max {max(values):6.1f} ms  n={len(values)}")


def lab_command(lab_dir: Path, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("sfops")), "lab", "--dir", str(lab_dir),
                    *args], check=True, capture_output=True)


def run(lab_dir: Path, size: tuple[int, int], presses: int, k8s_table: bool, settle: float,
        hang: str | None) -> list[float]:
    columns, lines = size
    term = Terminal(lab_dir / "sfops.toml", columns, lines)
    p95s = []
    try:
        time.sleep(settle)  # first polls in, the overview drawn
        if k8s_table:
            term.write(b"1")  # the first panel: the Kubernetes screen of a k8s-only lab
            time.sleep(settle)
        where = "kubernetes table" if k8s_table else "overview"
        state = f"{hang} hung" if hang else "healthy"
        if hang:
            lab_command(lab_dir, "hang", hang)
            time.sleep(3.0)
        try:
            first, full = help_presses(term, presses)
            label = f"{columns}x{lines} {where}, {state}:"
            print(line(f"{label} ? → first byte", first), flush=True)
            print(line(f"{label} ? → help screen painted", full), flush=True)
            p95s += [p95(full)] if full else []
            if k8s_table:
                cursor = cursor_presses(term, presses)
                print(line(f"{label} ↓ → first byte", cursor), flush=True)
                p95s += [p95(cursor)] if cursor else []
        finally:
            if hang:
                lab_command(lab_dir, "resume", hang)
    finally:
        term.close()
    return p95s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab-dir", type=Path, default=REPO / ".lab")
    parser.add_argument("--sizes", default="80x24,200x60")
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--settle", type=float, default=8.0,
                        help="seconds for the first polls before measuring")
    parser.add_argument("--hang", help="also measure with this lab component hung (SIGSTOP)")
    parser.add_argument("--k8s-table", action="store_true",
                        help="measure on the Kubernetes screen (a k8s-only scale lab)")
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    worst: list[float] = []
    for columns, lines in sizes:
        worst += run(args.lab_dir, (columns, lines), args.presses, args.k8s_table,
                     args.settle, None)
        if args.hang:
            worst += run(args.lab_dir, (columns, lines), args.presses, args.k8s_table,
                         args.settle, args.hang)
    print(f"machine: {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"RATIO paint_p95_vs_50ms {max(worst) / TARGET_MS if worst else float('nan'):.2f}")


if __name__ == "__main__":
    main()
