"""The kernel model: the route lookup replayed on a snapshot (answer, fib, lookup, moments),
the host's rules, sysctls and conntrack at each moment (netstate), and findings' explanations.
May import: sources, events, flows.
"""
