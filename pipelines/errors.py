"""The project's own error kinds: each is a mistake in the user's input — a setting, a corpus, a record, a
checkpoint — whose message is one line saying what is wrong, where (setting, file, file:line) and what to do.

Stage entry points (pipelines/entry.py) print these as that one line and exit with status 2 (RunFinishedError: a
notice, status 0); anything else is a bug and keeps its traceback. Kept free of Ray and torch: Ray Data tasks raise
them too.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors a user fixes by changing input or config (printed as one line, no traceback)."""


class ConfigError(UserError, ValueError):
    """A configuration that cannot work, found before the work starts."""


class CorpusError(UserError, ValueError):
    """The corpus cannot be used as configured (nothing readable, too little to train on)."""


class BadRecordError(CorpusError):
    """A corpus record that cannot be used (with data.on_bad_record=fail); the message names file and line."""


class MissingPathError(UserError, FileNotFoundError):
    """A path the config names (corpus, shards, checkpoint) does not exist."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not fit what the run asks of it (another model's shape, kind or tokenizer)."""


class RunFinishedError(UserError):
    """A run that already reached the steps asked for: nothing to do, and nothing is overwritten. The stage stops
    here; its entry point prints the message as a notice and exits with status 0 (re-running is not a mistake)."""
