"""One analysis: events to flows to detectors, whole or a part at a time, into one result
(``Analysis``) that every output renders.
May import: sources, events, flows, kernel, detectors.
"""
