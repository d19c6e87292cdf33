"""Schema migrations of the durable stores: one module per backend, one SQL step per version.

``STEPS[n]`` takes a database from schema version ``n`` to ``n + 1``; the store applies the
missing steps in order, each in its own transaction together with the new version number,
and refuses a file whose version is newer than ``len(STEPS)``.
"""
