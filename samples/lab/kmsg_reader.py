#!/usr/bin/env python3
"""Read /dev/kmsg (root namespace, global) from "now" until a stop file appears.

Writes one JSON line per record: seq, usec (kmsg clock), msg (first line, unescaped),
t_read (time.time() right after the read), naive_offset (time.time() -
CLOCK_MONOTONIC at that moment).  Bounded by --timeout seconds.
"""
import argparse
import json
import os
import re
import select
import time

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--stop", required=True)
ap.add_argument("--timeout", type=float, default=180)
a = ap.parse_args()

fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
os.lseek(fd, 0, os.SEEK_END)
out = open(a.out, "w")
t_end = time.monotonic() + a.timeout
stop_seen = None
p = select.poll()
p.register(fd, select.POLLIN)


def unescape(s):
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


with open(a.stop + ".ready", "w") as f:
    f.write("ready\n")
while time.monotonic() < t_end:
    if stop_seen is None and os.path.exists(a.stop):
        stop_seen = time.monotonic()
    if stop_seen is not None and time.monotonic() - stop_seen > 0.5:
        break
    if not p.poll(20):
        continue
    while True:
        try:
            rec = os.read(fd, 8192)
        except BlockingIOError:
            break
        except OSError:  # EPIPE: records overwritten before we read them
            continue
        t_read = time.time()
        naive = t_read - time.clock_gettime(time.CLOCK_MONOTONIC)
        text = rec.decode("utf-8", "replace")
        head, _, body = text.partition(";")
        fields = head.split(",")
        msg = unescape(body.split("\n", 1)[0])
        out.write(json.dumps({"prio": int(fields[0]), "seq": int(fields[1]), "usec": int(fields[2]),
                              "msg": msg, "t_read": t_read, "naive_offset": naive}) + "\n")
out.close()
