#!/usr/bin/env bash
# graywatch's resident memory over a long replay: a simulated landscape's day (24 h of event
# time, about 13 M flow records at --scale 1, 6 GB of flow-json never written to disk) piped
# from `graywatch simulate` into `graywatch replay -`, with the replay's resident set sampled
# every second. Memory must stay flat: windows close, pair state is dropped with them,
# baselines are bounded by the landscape's pairs and nodes, not by the number of records.
#
#   benches/memory.sh [DURATION] [SCALE]     # defaults: 24h 1
#
# Prints one line per sample (seconds since start, resident MiB) and the peak.
set -euo pipefail

duration="${1:-24h}"
scale="${2:-1}"
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
cargo build --release --locked --quiet
gw="$here/target/release/graywatch"
every=1

"$gw" simulate --scenario clean --duration "$duration" --scale "$scale" -q -o - |
    "$gw" replay -q -f flow-json --windows /dev/null - &
replay=$!
started=$(date +%s)
peak=0
while kill -0 "$replay" 2>/dev/null; do
    # VmRSS now, VmHWM the peak so far (between samples too)
    rss="" hwm=""
    read -r rss hwm < <(awk '/^VmRSS:/ {r = int($2 / 1024)} /^VmHWM:/ {h = int($2 / 1024)}
        END {if (r != "") print r, h}' "/proc/$replay/status" 2>/dev/null || true) || true
    if [ -n "$rss" ]; then
        echo "$(($(date +%s) - started)) s  ${rss} MiB"
        peak=$hwm
    fi
    sleep "$every"
done
status=0
wait "$replay" || status=$?
echo "peak resident (last VmHWM seen): $peak MiB over $(($(date +%s) - started)) s" \
    "($duration of event time at scale $scale)"
if [ "$status" -ne 0 ]; then
    echo "memory.sh: the replay failed (exit $status)" >&2
    exit "$status"
fi
