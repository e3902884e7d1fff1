"""What is written and shown: the text, JSON and Parquet reports, the HTML page, flow pictures,
timelines, and the event table as records and lines.
May import: sources, events, flows, kernel, detectors, analysis.
"""
