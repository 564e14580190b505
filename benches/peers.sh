#!/usr/bin/env bash
# graywatch end to end against its peers, whole processes on the same files, run alternately
# and compared by their medians (see benches/README.md for the table this prints).
#
#   benches/peers.sh [RUNS]        # RUNS per command, default 5
#
# Builds graywatch (release), makes the inputs under $PEERS_DIR (default target/peers; about
# 2.5 GB, made once), and needs the peers: DuckDB's Python package (`pip install duckdb`) and
# mawk (`apt-get install mawk`). PEERS_GOACCESS=1 adds GoAccess (`apt-get install goaccess`),
# one run: it is an order of magnitude slower.
#
# Jobs (each graywatch run writes every window aggregate, to /dev/null):
#   envoy-json  1.6 M Envoy json_format lines (the simulator's clean landscape, 40 min at
#               scale 3.46, the ephemeral port of each downstream address set to 0 so that
#               DuckDB's pairs are the landscape's pairs) → per 10 s window and pair: count,
#               bytes each way, errors, p50/p90/p99, max and sum of durations. Peer: DuckDB's
#               read_json + GROUP BY (benches/duckdb_windows.py), 1 thread and all, with the
#               issue's query ("count": it counts the pair-windows, and DuckDB's optimizer
#               then drops the aggregates nobody reads) and with every aggregate summed
#               ("aggregates": each one computed, as graywatch computes and writes them).
#   flow-json   the same requests as graywatch's flow records; peer: DuckDB on the same
#               columns (benches/duckdb_windows.py).
#   pairs       100,000 active pairs in flow-json (benches/pairs.py: 1.5 M records over 6
#               windows, about 2.5 per pair and window): window aggregation when the pair
#               table is large. Peer: DuckDB on the same file, as flow-json. graywatch's peak
#               resident memory on this job is printed too (bound: 1 GiB at 100 k pairs).
#   istio       the same requests in Istio's default sidecar format (Envoy text with Istio's
#               fields; 1.58 M lines, 462 MB); peer: mawk splitting the fields and counting
#               (a floor: not the same job).
#   nginx       the bundled NGINX combined log (10,000 lines) 100 times, each copy's
#               timestamps 4 days after the last one's, replayed with an allowed lateness of
#               70 s (the log's lines are shuffled within each minute); peer: mawk splitting
#               fields, counting statuses and summing bytes (a floor: not the same job).
set -euo pipefail
set -f # the commands below are split into words, never globbed

runs="${1:-5}"
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="${PEERS_DIR:-$here/target/peers}"
mkdir -p "$dir"
cd "$here"

python3 -c 'import duckdb' 2>/dev/null || { echo "peers.sh: needs DuckDB: pip install duckdb" >&2; exit 1; }
command -v mawk >/dev/null || { echo "peers.sh: needs mawk: apt-get install mawk" >&2; exit 1; }

cargo build --release --locked --quiet
gw="$here/target/release/graywatch"
cores="$(nproc)"

if [ ! -s "$dir/envoy.log" ]; then
    echo "making inputs in $dir ..." >&2
    "$gw" simulate --scenario clean --duration 40min --start 2026-01-05T12:00:00Z --scale 3.46 \
        --format envoy-json --mapping "$dir/map.toml" -o - -q |
        sed -E 's/("downstream_remote_address":"[0-9.]+:)[0-9]+"/\10"/' > "$dir/envoy.log.tmp"
    mv "$dir/envoy.log.tmp" "$dir/envoy.log"
fi
if [ ! -s "$dir/flow.log" ]; then
    "$gw" simulate --scenario clean --duration 40min --start 2026-01-05T12:00:00Z --scale 3.46 \
        --format flow-json -o "$dir/flow.log.tmp" -q
    mv "$dir/flow.log.tmp" "$dir/flow.log"
fi
if [ ! -s "$dir/istio.log" ]; then
    "$gw" simulate --scenario clean --duration 40min --start 2026-01-05T12:00:00Z --scale 3.46 \
        --format istio --mapping "$dir/istio.toml" -o "$dir/istio.log.tmp" -q
    mv "$dir/istio.log.tmp" "$dir/istio.log"
fi
if [ ! -s "$dir/nginx.log" ]; then
    python3 - "$here/deploy/examples/logs/elastic_examples_apache_logs.log" "$dir/nginx.log.tmp" <<'EOF'
import datetime, re, sys
src, dst = sys.argv[1], sys.argv[2]
lines = open(src, encoding="utf-8", errors="surrogateescape").read().splitlines()
stamp = re.compile(r"\[(\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d) ([+-]\d{4})\]")
fmt = "%d/%b/%Y:%H:%M:%S"
with open(dst, "w", encoding="utf-8", errors="surrogateescape") as out:
    for copy in range(100):
        shift = datetime.timedelta(days=4 * copy)
        def moved(m):
            t = datetime.datetime.strptime(m.group(1), fmt) + shift
            return "[" + t.strftime(fmt) + " " + m.group(2) + "]"
        for line in lines:
            out.write(stamp.sub(moved, line, count=1) + "\n")
EOF
    mv "$dir/nginx.log.tmp" "$dir/nginx.log"
fi
if [ ! -s "$dir/pairs.log" ]; then
    python3 benches/pairs.py "$dir/pairs.log.tmp"
    mv "$dir/pairs.log.tmp" "$dir/pairs.log"
fi
printf '[detect.window]\nallowed-lateness = "70s"\n' > "$dir/nginx.toml"

# name|command, run alternately
jobs=(
    "envoy-json graywatch -j1|$gw replay -q -j1 -c $dir/map.toml -f envoy-json --windows /dev/null $dir/envoy.log"
    "envoy-json graywatch -j$cores|$gw replay -q -j$cores -c $dir/map.toml -f envoy-json --windows /dev/null $dir/envoy.log"
    "envoy-json duckdb 1 thread|python3 benches/duckdb_windows.py envoy-json $dir/envoy.log 1"
    "envoy-json duckdb $cores threads|python3 benches/duckdb_windows.py envoy-json $dir/envoy.log $cores"
    "envoy-json duckdb 1 thread, aggregates|python3 benches/duckdb_windows.py envoy-json $dir/envoy.log 1 aggregates"
    "envoy-json duckdb $cores threads, aggregates|python3 benches/duckdb_windows.py envoy-json $dir/envoy.log $cores aggregates"
    "flow-json graywatch -j1|$gw replay -q -j1 -f flow-json --windows /dev/null $dir/flow.log"
    "flow-json graywatch -j$cores|$gw replay -q -j$cores -f flow-json --windows /dev/null $dir/flow.log"
    "flow-json duckdb 1 thread|python3 benches/duckdb_windows.py flow-json $dir/flow.log 1"
    "flow-json duckdb $cores threads|python3 benches/duckdb_windows.py flow-json $dir/flow.log $cores"
    "flow-json duckdb 1 thread, aggregates|python3 benches/duckdb_windows.py flow-json $dir/flow.log 1 aggregates"
    "flow-json duckdb $cores threads, aggregates|python3 benches/duckdb_windows.py flow-json $dir/flow.log $cores aggregates"
    "pairs graywatch -j1|$gw replay -q -j1 -f flow-json --windows /dev/null $dir/pairs.log"
    "pairs graywatch -j$cores|$gw replay -q -j$cores -f flow-json --windows /dev/null $dir/pairs.log"
    "pairs duckdb 1 thread|python3 benches/duckdb_windows.py flow-json $dir/pairs.log 1"
    "pairs duckdb $cores threads|python3 benches/duckdb_windows.py flow-json $dir/pairs.log $cores"
    "pairs duckdb 1 thread, aggregates|python3 benches/duckdb_windows.py flow-json $dir/pairs.log 1 aggregates"
    "pairs duckdb $cores threads, aggregates|python3 benches/duckdb_windows.py flow-json $dir/pairs.log $cores aggregates"
    "istio graywatch -j1|$gw replay -q -j1 -c $dir/istio.toml -f istio --windows /dev/null $dir/istio.log"
    "istio graywatch -j$cores|$gw replay -q -j$cores -c $dir/istio.toml -f istio --windows /dev/null $dir/istio.log"
    "istio mawk|mawk {c[\$9]++;b+=\$10}END{print(b)} $dir/istio.log"
    "nginx graywatch -j1|$gw replay -q -j1 -c $dir/nginx.toml -f nginx-combined --windows /dev/null $dir/nginx.log"
    "nginx graywatch -j$cores|$gw replay -q -j$cores -c $dir/nginx.toml -f nginx-combined --windows /dev/null $dir/nginx.log"
    "nginx mawk|mawk {c[\$9]++;b+=\$10}END{print(b)} $dir/nginx.log"
)

times="$dir/times.txt"
: > "$times"
for ((r = 1; r <= runs; r++)); do
    for job in "${jobs[@]}"; do
        name="${job%%|*}"
        cmd="${job#*|}"
        start=$(date +%s.%N)
        # word splitting of $cmd is wanted: the paths have no spaces
        # shellcheck disable=SC2086
        $cmd > /dev/null 2>&1 || { echo "peers.sh: failed: $cmd" >&2; exit 1; }
        end=$(date +%s.%N)
        echo "$name|$(echo "$end - $start" | bc)" >> "$times"
    done
    echo "run $r of $runs done" >&2
done
if [ "${PEERS_GOACCESS:-0}" = 1 ]; then
    start=$(date +%s.%N)
    goaccess "$dir/nginx.log" --log-format=COMBINED --no-global-config -o "$dir/goaccess.json" > /dev/null 2>&1
    end=$(date +%s.%N)
    echo "nginx goaccess|$(echo "$end - $start" | bc)" >> "$times"
fi

# peak resident memory of the 100 k-pair job (GNU time's %M, KiB)
if [ -x /usr/bin/time ]; then
    rss=$( { /usr/bin/time -f %M "$gw" replay -q -j"$cores" -f flow-json --windows /dev/null \
        "$dir/pairs.log" > /dev/null; } 2>&1 | tail -1) || rss=""
    case "$rss" in
        '' | *[!0-9]*) echo "pairs: no peak memory (needs GNU time at /usr/bin/time)" ;;
        *) echo "pairs graywatch -j$cores peak resident memory: $((rss / 1024)) MiB" ;;
    esac
fi

python3 - "$times" "$cores" <<'EOF'
import statistics, sys
times, cores = sys.argv[1], sys.argv[2]
by = {}
for line in open(times):
    name, t = line.rstrip("\n").split("|")
    by.setdefault(name, []).append(float(t))
med = {k: statistics.median(v) for k, v in by.items()}
print(f"{'job':<44} {'median s':>9} {'runs':>5}")
for k, v in by.items():
    print(f"{k:<44} {med[k]:>9.2f} {len(v):>5}")
print()
def ratio(a, b):
    if a in med and b in med:
        print(f"{a:<24} vs {b:<38} {med[b] / med[a]:5.2f}x faster" if med[a] <= med[b]
              else f"{a:<24} vs {b:<38} {med[a] / med[b]:5.2f}x slower")
for fmt in ("envoy-json", "flow-json", "pairs"):
    ratio(f"{fmt} graywatch -j1", f"{fmt} duckdb 1 thread")
    ratio(f"{fmt} graywatch -j{cores}", f"{fmt} duckdb 1 thread")
    ratio(f"{fmt} graywatch -j{cores}", f"{fmt} duckdb {cores} threads")
    ratio(f"{fmt} graywatch -j{cores}", f"{fmt} duckdb 1 thread, aggregates")
    ratio(f"{fmt} graywatch -j{cores}", f"{fmt} duckdb {cores} threads, aggregates")
    ratio(f"{fmt} graywatch -j{cores}", f"{fmt} graywatch -j1")
ratio("istio graywatch -j1", "istio mawk")
ratio(f"istio graywatch -j{cores}", "istio mawk")
ratio(f"istio graywatch -j{cores}", "istio graywatch -j1")
ratio("nginx graywatch -j1", "nginx mawk")
ratio(f"nginx graywatch -j{cores}", "nginx mawk")
ratio(f"nginx graywatch -j{cores}", "nginx graywatch -j1")
ratio(f"nginx graywatch -j{cores}", "nginx goaccess")
EOF
