"""One exception type for every problem a user can fix.

The CLI prints a ``BoltError`` as a single clear message (what, where, how to fix),
scrubbed of secrets, and exits with its ``exit_code``: 2 for a user error (a bad flag,
input or configuration), 1 for a fault of the environment (``EnvironmentFault``: a server
that cannot be reached, say). Any other exception is a bug and keeps its traceback.
"""


class BoltError(Exception):
    """A problem with the user's input, configuration or environment."""

    exit_code = 2


class EnvironmentFault(BoltError):
    """A problem outside the user's command (an unreachable server): the same command may work later."""

    exit_code = 1
