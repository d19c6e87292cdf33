"""The reliability suite: one test per scenario of RELIABILITY.md, each asserting its pass figure.

See harness.py for the ledger, node subprocesses and libfaketime, and RELIABILITY-RESULTS.md
for the measured figures and how to run the chaos tier.
"""
