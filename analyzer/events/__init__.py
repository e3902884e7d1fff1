"""The event table on one clock: every input's rows merged in time order, logs put on the
capture clock, each packet's card resolved (stream), and that table written as Parquet.
May import: sources.
"""
