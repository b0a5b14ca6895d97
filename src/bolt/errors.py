"""One exception type for every problem a user can fix.

The CLI prints a ``BoltError`` as a single clear message (what, where, how to fix)
and exits with status 2; any other exception is a bug and keeps its traceback.
"""


class BoltError(Exception):
    """A problem with the user's input, configuration or environment."""
