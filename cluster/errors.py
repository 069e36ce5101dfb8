"""The cluster's user error, in a module without Ray: every stage's entry point (pipelines/entry.py) catches it, and
importing that must not import Ray — the terminal chat (`python -m pipelines.chat`) runs without it."""


class ClusterError(ValueError):
    """The cluster cannot be reached or cannot run what was asked, as configured (a user error: one line)."""
