#!/usr/bin/env bash
# Build the Kubernetes lab binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from the Go module proxy into a per-version cache outside the
# repository. Idempotent: a binary already in the cache is not rebuilt.
#
#   deploy/lab/install/k8s.sh            build what is missing, print the bin directory last
#   deploy/lab/install/k8s.sh --print-dir   only print the bin directory
#
# Versions are pinned by deploy/k8s-tools/go.mod (Kubernetes + etcd) and
# deploy/k8s-tools/kwok/go.mod (kwok); change K8S_VERSION below together with them.
set -euo pipefail

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$(cd "$here/../../k8s-tools" && pwd)"
cache="${SFOPS_CACHE:-$HOME/.cache/sfops}"
key="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}"
bin="$cache/$key/bin"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$bin"
  exit 0
fi

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if [[ ! -x "$GO" ]]; then
  echo "k8s.sh: no Go toolchain found (set GO=/path/to/go)" >&2
  exit 1
fi
export GOFLAGS="${GOFLAGS:--mod=mod}"
# Parallel compile jobs: default to the number of cores (the reference machine has 2).
jobs="${SFOPS_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

mkdir -p "$bin"
# Two `lab up`s (or a test run and a manual one) must not build the same binary at once.
exec 9>"$cache/$key/.build.lock"
flock 9
start=$(date +%s)

# name|module dir|package
targets=(
  "etcd|$tools|go.etcd.io/etcd/server/v3"
  "kube-apiserver|$tools|k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager|$tools|k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler|$tools|k8s.io/kubernetes/cmd/kube-scheduler"
  "kubectl|$tools|k8s.io/kubernetes/cmd/kubectl"
  "kwok|$tools/kwok|sigs.k8s.io/kwok/cmd/kwok"
)

total=${#targets[@]}
n=0
for entry in "${targets[@]}"; do
  IFS='|' read -r name dir pkg <<<"$entry"
  n=$((n + 1))
  if [[ -x "$bin/$name" ]]; then
    echo "[k8s $n/$total] $name: cached"
    continue
  fi
  t0=$(date +%s)
  echo "[k8s $n/$total] building $name ($pkg) ... (elapsed $(( t0 - start ))s)"
  # Build to a temporary name and rename, so an interrupted build never leaves a binary that
  # looks complete.
  (cd "$dir" && "$GO" build -p "$jobs" -trimpath -ldflags="-s -w" -o "$bin/.$name.tmp" "$pkg")
  mv "$bin/.$name.tmp" "$bin/$name"
  t1=$(date +%s)
  echo "[k8s $n/$total] $name built in $(( t1 - t0 ))s (elapsed $(( t1 - start ))s)"
done
echo "[k8s] all $total binaries in $bin (total $(( $(date +%s) - start ))s)"
echo "$bin"
