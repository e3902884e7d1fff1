"""Flows and parts: observations joined into packets and flows, translated connections paired
(nat), and a big event stream cut into parts of whole conversations (partitions).
May import: sources, events.
"""
