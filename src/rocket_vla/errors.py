"""User-facing errors.

A :class:`RocketError` is a mistake the user can fix (bad layer index, missing dataset,
corrupt cache entry, ...). Its message is one sentence that names the fix. The CLI prints
it without a traceback; anything else is a bug and keeps its traceback.
"""


class RocketError(ValueError):
    """A user-caused error whose message says how to fix it."""
