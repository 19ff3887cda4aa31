#!/usr/bin/env python3
"""The server's CPU per wake-up of a blocked XREAD (issue 14, compat14).

Two connections play ping-pong over two streams: each sends, in one write, an XADD to the
stream the other waits on and an XREAD BLOCK 0 of its own stream after the last id it saw. The
XADD wakes the other side's blocked XREAD; the XREAD, which reaches the server before the other
side can answer, blocks. So every round is two XADDs, two XREADs that block and two wake-ups.
`--streams 2` makes each XREAD wait on a second stream too, one nobody writes.

Prints the server's CPU (utime+stime from /proc/<pid>/stat, 10 ms ticks) per round. Usage:
    scripts/bench-xread-wake.py --port P --pid PID [--rounds N] [--streams 1|2] [--password PW]
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
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def player(c: redis.Redis, mine: str, theirs: str, rounds: int, streams: int, serve: bool,
           errors: list):
    try:
        idle = [f"{mine}-idle"] if streams == 2 else []
        last = "0-0"
        if not serve:
            # The first XREAD: waits for the other side's first XADD.
            reply = c.execute_command("XREAD", "BLOCK", "0", "STREAMS", mine, *idle, last,
                                      *(["$"] * len(idle)))
            last = reply[0][1][-1][0]
        # The waiting side's first XREAD was one of its rounds; its last XADD ends the other's.
        for _ in range(rounds if serve else rounds - 1):
            p = c.pipeline(transaction=False)
            p.execute_command("XADD", theirs, "*", "f", "v")
            p.execute_command("XREAD", "BLOCK", "0", "STREAMS", mine, *idle, last,
                              *(["$"] * len(idle)))
            _, reply = p.execute()
            last = reply[0][1][-1][0]
        if not serve:
            c.execute_command("XADD", theirs, "*", "f", "v")
    except Exception as e:  # reported by the main thread
        errors.append(e)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--streams", type=int, choices=(1, 2), default=1)
    ap.add_argument("--password")
    a = ap.parse_args()
    conn = lambda: redis.Redis(port=a.port, password=a.password, socket_timeout=30)
    conn().delete("ping", "pong", "ping-idle", "pong-idle")
    errors: list = []
    # "pong" waits first; "ping" serves first.
    waiter = threading.Thread(target=player,
                              args=(conn(), "pong", "ping", a.rounds, a.streams, False, errors))
    server = threading.Thread(target=player,
                              args=(conn(), "ping", "pong", a.rounds, a.streams, True, errors))
    cpu0, t0 = cpu_seconds(a.pid), time.monotonic()
    waiter.start()
    time.sleep(0.2)
    server.start()
    waiter.join()
    server.join()
    cpu, wall = cpu_seconds(a.pid) - cpu0, time.monotonic() - t0
    if errors:
        raise errors[0]
    print(f"streams={a.streams} rounds={a.rounds} server_cpu={cpu:.2f}s "
          f"cpu_per_round={cpu / a.rounds * 1e6:.2f}us rounds_per_s={a.rounds / wall:.0f}")


if __name__ == "__main__":
    main()
