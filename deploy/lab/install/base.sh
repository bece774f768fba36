#!/usr/bin/env bash
# Install what the lab and the tests need on a Debian machine: PostgreSQL, nginx, openssh-server,
# tmux and kcat from Debian, the lab's operator user, and the Python environment.
# Idempotent: a second run changes nothing and takes seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

step() { printf '[install %s] %s\n' "$1" "$2"; }
need_root() { [ "$(id -u)" -eq 0 ] || { echo "install: run as root (apt-get, useradd)" >&2; exit 2; }; }

packages=(postgresql nginx-light openssh-server openssh-client tmux kcat procps python3-venv)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  step 1/4 "apt-get install ${missing[*]}"
  if [ ! -f /var/lib/apt/periodic/sfops-updated ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
    apt-get update -qq
    mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/sfops-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian packages start system-wide services; the lab runs its own instances.
  for svc in nginx postgresql ssh; do service "$svc" stop >/dev/null 2>&1 || true; done
else
  step 1/4 "Debian packages present"
fi

if ! id sfops-lab >/dev/null 2>&1; then
  need_root
  step 2/4 "creating the lab operator user sfops-lab (key-only SSH, no password)"
  useradd --create-home --shell /bin/bash sfops-lab
  # '*' = no password can match, yet not 'locked' (sshd refuses locked accounts even for keys)
  usermod -p '*' sfops-lab
else
  step 2/4 "lab operator user sfops-lab present"
fi

# The lab's sshd also lets the postgres user in (key-only): the SSH executor reaches the
# PostgreSQL members as their OS user. Debian creates it locked ('!'), which sshd refuses;
# '*' (as for sfops-lab) matches no password yet is not locked. (passwd -S says L for both.)
if getent shadow postgres 2>/dev/null | cut -d: -f2 | grep -q '^!'; then
  usermod -p '*' postgres
fi

# Debian's interpreter, not one under /root: the lab's operator user runs this checkout's
# sfops over SSH in the end-to-end tests and must be able to execute it.
PYTHON="${PYTHON:-/usr/bin/python3}"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.sfops-python 2>/dev/null)" != "$PYTHON" ]; then
  step 3/4 "creating .venv with $PYTHON"
  rm -rf .venv
  "$PYTHON" -m venv .venv
  echo "$PYTHON" > .venv/.sfops-python
fi
stamp=.venv/.sfops-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  step 3/4 "pip install -e .[dev]"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
else
  step 3/4 "Python environment up to date"
fi
step 4/4 "base install done"
