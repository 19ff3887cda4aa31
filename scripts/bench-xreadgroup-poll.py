#!/usr/bin/env python3
"""The server's work for empty XREADGROUP polls of a stream that blocked readers wait on (issue
14, compat14).

`--readers` connections block in XREADGROUP ... BLOCK 0 on stream `s` (group `g`); another
consumer then polls `XREADGROUP GROUP g poller STREAMS s >` (nothing to read) `--polls` times,
`--gap-ms` apart, so each poll updates the poller's seen-time. Before compat14 each such poll
offered the key to every blocked reader, which ran its XREADGROUP again and went back to
waiting. At the end one XADD per reader releases them. Prints the server's CPU (utime+stime
from /proc/<pid>/stat, 10 ms ticks) per poll; run the server under callgrind for instructions.
Usage:
    scripts/bench-xreadgroup-poll.py --port P --pid PID [--readers 10] [--polls 2000]
        [--gap-ms 2] [--password PW]
Needs redis-py (tests/python/requirements.txt).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import redis


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def blocked(c: redis.Redis) -> int:
    return int(c.info("clients")["blocked_clients"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--readers", type=int, default=10)
    ap.add_argument("--polls", type=int, default=2000)
    ap.add_argument("--gap-ms", type=float, default=2.0)
    ap.add_argument("--password")
    a = ap.parse_args()
    conn = lambda: redis.Redis(port=a.port, password=a.password, socket_timeout=60)
    c = conn()
    c.delete("s")
    c.xgroup_create("s", "g", id="$", mkstream=True)
    got = []

    def reader(i):
        got.append(conn().execute_command("XREADGROUP", "GROUP", "g", f"r{i}", "BLOCK", "0",
                                          "STREAMS", "s", ">"))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(a.readers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while blocked(c) != a.readers:
        assert time.monotonic() < deadline, "the readers never all blocked"
        time.sleep(0.01)
    cpu0, t0 = cpu_seconds(a.pid), time.monotonic()
    for _ in range(a.polls):
        assert not c.execute_command("XREADGROUP", "GROUP", "g", "poller", "STREAMS", "s", ">")
        time.sleep(a.gap_ms / 1000)
    cpu, wall = cpu_seconds(a.pid) - cpu0, time.monotonic() - t0
    assert blocked(c) == a.readers, "a reader was answered by an empty poll"
    for _ in range(a.readers):
        c.xadd("s", {"f": "v"})
    for t in threads:
        t.join(30)
    assert len(got) == a.readers
    print(f"readers={a.readers} polls={a.polls} gap_ms={a.gap_ms} server_cpu={cpu:.2f}s "
          f"cpu_per_poll={cpu / a.polls * 1e6:.1f}us wall={wall:.1f}s")


if __name__ == "__main__":
    main()
