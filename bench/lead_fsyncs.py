#!/usr/bin/env python3
"""Sums, per WAL checkpoint, the fsyncs a strict SQLite server makes while its audit writer
thread holds the group-commit lead (haechi_audit::batcher::Group::checkpoint).

Record during a strict `bench/vault.sh` value-read run, then summarise:

    perf trace -p "$(pgrep -f 'haechi server' | head -1)" --duration 0.05 -e fsync,fdatasync \\
        -o trace.txt -- sleep 4        # or: timeout -s INT 4 perf trace -p PID ...
    python3 bench/lead_fsyncs.py trace.txt

A checkpoint is a run of fsyncs less than 60 ms apart. In it, the database file's descriptor
is the smallest one the writer thread syncs (its connection opened the database first); the
lead is held for the last log fsync before the database's last one, that one, and the fsync a
waiter's thread makes when its commit starts the log over.
"""
import re
import statistics
import sys

LINE = re.compile(r"\s*([\d.]+) \(\s*([\d.]+) ms\): (\S+)/\d+ fsync\(fd: (\d+)\)")


def main(path):
    rows = []
    for line in open(path):
        m = LINE.match(line)
        if m:
            rows.append((float(m[1]), float(m[2]), m[3], int(m[4])))
    if not rows:
        sys.exit(f"no fsync lines in {path}")
    cycles, cur = [], []
    for r in rows:
        if cur and r[0] - cur[-1][0] > 60:
            cycles.append(cur)
            cur = []
        cur.append(r)
    cycles.append(cur)
    first, lead = [], []
    # The last checkpoint may be cut off by the end of the trace.
    for c in cycles[:-1]:
        w = [r for r in c if r[2].startswith("haechi-audit")]
        if not w:
            continue
        first.append(w[0][1])
        db = min(r[3] for r in w)
        last_db = max(i for i, r in enumerate(w) if r[3] == db)
        if last_db == 0:
            continue
        waiters = sum(r[1] for r in c if not r[2].startswith("haechi-audit"))
        lead.append(w[last_db - 1][1] + w[last_db][1] + waiters)
    if not lead:
        sys.exit("no complete checkpoint in the trace")
    print(
        f"checkpoints {len(lead)}; first log fsync median {statistics.median(first):.2f} ms; "
        f"held in the lead: median {statistics.median(lead):.2f} ms, max {max(lead):.2f} ms"
    )


if __name__ == "__main__":
    main(sys.argv[1])
