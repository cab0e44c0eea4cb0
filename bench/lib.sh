# Shared by the benchmark scripts (sourced first, as `source "$(dirname "$0")/lib.sh"`): strict
# mode from the project root, a work directory that is removed at exit with every server
# started, free loopback ports, a process's CPU time, and the dnsperf runs' defaults.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)
# The settings of the interleaved dnsperf runs (bench/dns.sh, bench/steered.sh).
dnsperf_defaults() {
    ROUNDS=${ROUNDS:-4}
    DURATION=${DURATION:-10}
    CLIENTS=${CLIENTS:-8}
    THREADS=${THREADS:-2}
}
