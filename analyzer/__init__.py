"""nicpath: offline analyzer of multi-NIC Linux routing failures.

Joins packet captures, netfilter LOG lines and ``ip`` snapshots taken on one host into one event
table, per-flow timelines and findings (see README.md).
"""

__version__ = "0.1.0"
