"""Commands and the library API: the command line (cli), the steps as functions over Arrow
tables (library), batch over many bundles, and inspect.
May import: sources, events, flows, kernel, detectors, analysis, outputs, collect.
"""
