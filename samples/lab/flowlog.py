"""Append one JSON line describing a flow a generator opened (lab helper)."""
import ipaddress
import json
import os
import time


def record(path, proto, src, sport, dst, dport, role, why, initiator):
    if not path:
        return
    rec = {"proto": proto, "src": str(ipaddress.ip_address(src.split("%")[0])), "sport": sport,
           "dst": str(ipaddress.ip_address(dst.split("%")[0])), "dport": dport,
           "role": role, "why": why, "initiator": initiator, "opened_at": time.time()}
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())
