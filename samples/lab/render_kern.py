#!/usr/bin/env python3
"""Turn the records kept by kmsg_reader.py into kern.dmesg, kern.journal and kern.syslog.

Kept: LOG lines carrying one of our prefixes, martian / "ll header" lines, and other kernel
lines that name one of the lab's own devices (bridge port state, renames, promiscuous mode).

Wall clock: the kmsg timestamp is the kernel's local clock.  The reader records
time.time() - CLOCK_MONOTONIC at each read (what journald would use); on this VM the kmsg
clock runs behind CLOCK_MONOTONIC by a varying amount, so the offset actually applied is
calibrated from the records themselves: min(t_read - usec) over the records read during the
recording (a record is read a few hundred microseconds after it is written).
"""
import argparse
import datetime
import json
import re
import statistics

ap = argparse.ArgumentParser()
ap.add_argument("--raw", required=True)
ap.add_argument("--bundle", required=True)
ap.add_argument("--devices", required=True, help="comma separated device names of the lab")
ap.add_argument("--info", required=True, help="JSON file for the offsets used")
ap.add_argument("--hostname", default="nicpath-lab")
a = ap.parse_args()

recs = [json.loads(l) for l in open(a.raw) if l.strip()]
devs = [d for d in a.devices.split(",") if d]
dev_re = re.compile(r"^(%s)(: |\b)|\((%s)\)" % ("|".join(map(re.escape, devs)), "|".join(map(re.escape, devs))))
log_re = re.compile(r"^\[FILTER-(INPUT|OUTPUT|FORWARD) (tcp|udp|icmp|icmp6)\] ")


def keep(msg):
    if log_re.match(msg):
        return True
    if "martian" in msg or msg.startswith("ll header"):
        return True
    return bool(dev_re.search(msg))


kept = [r for r in recs if keep(r["msg"])]
if recs:
    calibrated = min(r["t_read"] - r["usec"] / 1e6 for r in recs)
    naive = statistics.median(r["naive_offset"] for r in recs)
else:
    calibrated = naive = None
mono_gap = None if calibrated is None else naive - calibrated

d, j, s = [], [], []
for r in kept:
    sec, usec = divmod(r["usec"], 1000000)
    d.append("[%5d.%06d] %s" % (sec, usec, r["msg"]))
    wall = r["usec"] / 1e6 + calibrated
    w_us = round(wall * 1e6)
    dt = datetime.datetime.fromtimestamp(w_us // 1000000, datetime.timezone.utc)
    j.append("%s.%06d+0000 %s kernel: %s" % (dt.strftime("%Y-%m-%dT%H:%M:%S"), w_us % 1000000, a.hostname, r["msg"]))
    s.append("%s %2d %s %s kernel: %s" % (dt.strftime("%b"), dt.day, dt.strftime("%H:%M:%S"), a.hostname, r["msg"]))
for name, lines in (("kern.dmesg", d), ("kern.journal", j), ("kern.syslog", s)):
    with open("%s/%s" % (a.bundle, name), "w") as f:
        f.write("".join(l + "\n" for l in lines))
json.dump({"calibrated_offset": calibrated, "naive_offset": naive,
           "kmsg_minus_monotonic_s": mono_gap, "records_read": len(recs), "records_kept": len(kept),
           "log_lines": sum(1 for r in kept if log_re.match(r["msg"]))},
          open(a.info, "w"), indent=1)
