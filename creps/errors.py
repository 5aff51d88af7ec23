"""Errors that end a command with one line: `error: <message>`, exit code 2 (UserError) or 1 (RunFailure)."""


class UserError(Exception):
    """A problem with what the user asked for (bad flag, bad data, missing file).

    The message names the problem and the fix, on one line. Bugs raise other exceptions.
    """


class RunFailure(Exception):
    """Something outside the program failed while it ran (a peer process or host gone, a network
    that does not connect): the CLI prints `error: <message>` on one line and exits with code 1.

    The message names what failed and what to do next (e.g. how to resume). Bugs raise other
    exceptions.
    """
