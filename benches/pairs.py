#!/usr/bin/env python3
"""The input of benches/peers.sh's `pairs` job: flow-json records of 100,000 active pairs
(400 sources × 250 destinations), 1.5 M records spread evenly over 60 s of event time (6 windows
of 10 s, about 2.5 records per pair and window), pairs, durations (1-200 ms), 1 % 503s and
sizes drawn with Numerical Recipes' 64-bit LCG (as benches/window.rs): the same file on every
machine. Every pair stays in one zone, so the job measures aggregation rather than tens of
thousands of cross-zone findings per window.

Usage: pairs.py OUT
"""
import sys

state = 42


def draw():
    global state
    state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
    return state >> 33


T0, RECORDS, SPAN_US = 1_767_614_400_000_000, 1_500_000, 60_000_000
with open(sys.argv[1], "w") as out:
    for i in range(RECORDS):
        p = draw() % 100_000
        source, destination = p // 250, p % 250
        status = 503 if draw() % 100 == 0 else 200
        out.write(
            f'{{"schema_version":1,"start_us":{T0 + i * SPAN_US // RECORDS},'
            f'"duration_us":{1000 + draw() % 199_000},"source":"src-{source:03}",'
            f'"source_zone":"zone-a","destination":"dst-{destination:03}",'
            f'"destination_zone":"zone-a","protocol":"HTTP/1.1",'
            f'"method":"GET","status":{status},"response_flags":null,'
            f'"bytes_received":{200 + draw() % 1000},"bytes_sent":{1000 + draw() % 9000},'
            f'"upstream_host":null,"upstream_attempts":[],"request_id":null,"reporter":"envoy"}}\n'
        )
