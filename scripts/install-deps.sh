#!/usr/bin/env bash
# Installs what sdnkvs's tests, demo and benchmarks need on a fresh Debian
# machine (run as root). Idempotent.
set -euo pipefail
pkgs=(iproute2 iputils-ping redis-server redis-tools python3-redis iperf3 etcd-server etcd-client ethtool procps)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Debian redis-server package starts a system instance; tests start
# their own servers on their own ports and addresses, so stop it if running.
if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server >/dev/null 2>&1 || true; fi
modprobe tun 2>/dev/null || true
[ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }
# staticcheck for scripts/test.sh (a version that knows Go 1.26), into
# $(go env GOPATH)/bin, which scripts/test.sh puts on PATH.
staticcheck_version=v0.8.2
if ! PATH="$PATH:$(go env GOPATH)/bin" staticcheck -version 2>/dev/null | grep -q "${staticcheck_version#v}"; then
  go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
fi
echo "install-deps: ok"
