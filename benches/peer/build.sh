#!/usr/bin/env bash
# Builds benches/peer/rte_hash_peer.c against the system DPDK (Debian: apt-get install libdpdk-dev
# pkg-config) into $PEER_OUT (default build/peer under the project root); prints the binary's path.
#   PEER_MARCH=native (default) | any other -march value
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${PEER_OUT:-$here/../../build/peer}"
if ! command -v pkg-config >/dev/null || ! pkg-config --exists libdpdk; then
    echo "benches/peer/build.sh: DPDK not found by pkg-config (Debian: apt-get install libdpdk-dev pkg-config)" >&2
    exit 1
fi
mkdir -p "$out"
# shellcheck disable=SC2046  # pkg-config prints several flags on purpose
gcc -O3 -march="${PEER_MARCH:-native}" -Wall -Wextra -Werror $(pkg-config --cflags libdpdk) \
    "$here/rte_hash_peer.c" -o "$out/rte_hash_peer" $(pkg-config --libs libdpdk)
echo "$out/rte_hash_peer"
