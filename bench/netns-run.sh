#!/usr/bin/env bash
# Runs a command in a fresh network namespace whose TCP established-connection
# hash table has EHASH buckets (default 2,097,152), with its loopback up.
#
#   bench/netns-run.sh [EHASH] -- COMMAND...
#   e.g. bench/netns-run.sh 2097152 -- env SCALE_CONNS=1000000 ... bench/run.sh scale
#
# Why: the kernel sizes the host's table once, at boot, from RAM
# (`dmesg | grep "established hash"`: 262,144 buckets on this 24 GiB VM). A
# million loopback connections are two million sockets, eight to a bucket, and
# every packet (each ping, pong and ACK) walks its bucket: in the 1M run's
# restart phase `__inet_lookup_established` was the top symbol of the whole
# machine (12% of all samples). A host meant to hold a million connections is
# booted with `thash_entries=` (see docs/operations.md); on a running kernel
# (>= 6.1) the same table size is available to new namespaces through
# `net.ipv4.tcp_child_ehash_entries`, which is what this script uses. Needs
# root. The namespace is removed when the command ends.
set -euo pipefail
ehash=2097152
if [ "${1:-}" != "--" ]; then ehash=$1; shift; fi
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [EHASH] -- COMMAND..." >&2; exit 2; }

ns="sb-bench-$$"
old=$(sysctl -n net.ipv4.tcp_child_ehash_entries)
sysctl -qw net.ipv4.tcp_child_ehash_entries="$ehash"
ip netns add "$ns"
# Only namespaces created while it is set get the size: put it back at once.
sysctl -qw net.ipv4.tcp_child_ehash_entries="$old"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns exec "$ns" ip link set lo up
echo "netns $ns: tcp_ehash_entries=$(ip netns exec "$ns" sysctl -n net.ipv4.tcp_ehash_entries)" >&2
ip netns exec "$ns" "$@"
