#!/usr/bin/env python3
"""DuckDB, the peer of benches/peers.sh: per 10 s window and pair, the aggregates graywatch
writes (requests, bytes each way, 5xx errors, p50/p90/p99, max and sum of durations), from
the same JSON-lines file.

Usage: duckdb_windows.py envoy-json|flow-json FILE THREADS [count|aggregates]
(needs: pip install duckdb). Prints the number of pair-windows and the seconds on stderr.

count (the default) is the query of the throughput issue's table: it counts the pair-windows
of the aggregating subquery. DuckDB's optimizer removes the aggregates nobody reads from that
subquery (EXPLAIN shows a hash group-by on window and pair only, reading three columns), so
it computes the groups but not the aggregates. aggregates sums every aggregate over the
pair-windows, so that each one is computed, as graywatch computes and writes them all.

envoy-json: Envoy json_format lines; a pair is (downstream_remote_address, upstream_host),
duration in ms. This is the query of the throughput issue's table (DuckDB 1 thread: 1.45 s on
1.6 M lines), so its ratios compare.
flow-json: graywatch's flow records; a pair is (source, destination), duration in µs.
"""
import sys
import time

import duckdb

fmt, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
mode = sys.argv[4] if len(sys.argv) > 4 else "count"
if mode not in ("count", "aggregates"):
    sys.exit(f"duckdb_windows.py: unknown mode {mode} (count or aggregates)")
if fmt == "envoy-json":
    window = "time_bucket(INTERVAL 10 SECOND, start_time::TIMESTAMP)"
    pair = "downstream_remote_address, upstream_host"
    status, duration = "response_code", "duration"
    columns = ("start_time:'VARCHAR', response_code:'INTEGER', bytes_received:'BIGINT', "
               "bytes_sent:'BIGINT', duration:'BIGINT', upstream_host:'VARCHAR', "
               "downstream_remote_address:'VARCHAR'")
elif fmt == "flow-json":
    window = "start_us // 10000000"
    pair = "source, destination"
    status, duration = "status", "duration_us"
    columns = ("start_us:'BIGINT', status:'INTEGER', bytes_received:'BIGINT', "
               "bytes_sent:'BIGINT', duration_us:'BIGINT', source:'VARCHAR', "
               "destination:'VARCHAR'")
else:
    sys.exit(f"duckdb_windows.py: unknown format {fmt}")

con = duckdb.connect()
con.execute(f"SET threads={threads}")
started = time.time()
outer = ("count(*)" if mode == "count" else
         "count(*), sum(n), sum(bi), sum(bo), sum(e), sum(q[1] + q[2] + q[3]), sum(mx), sum(sd)")
n = con.execute(f"""
SELECT {outer} FROM (
  SELECT {window} AS w, {pair},
         count(*) AS n, sum(bytes_received) bi, sum(bytes_sent) bo,
         sum(CASE WHEN {status} >= 500 THEN 1 ELSE 0 END) e,
         quantile_disc({duration}, [0.5, 0.9, 0.99]) q, max({duration}) mx, sum({duration}) sd
  FROM read_json('{path}', format='newline_delimited', columns={{{columns}}})
  GROUP BY ALL)
""").fetchone()[0]
print(f"duckdb {fmt} threads={threads} {mode}: {n} pair-windows in {time.time() - started:.2f}s",
      file=sys.stderr)
