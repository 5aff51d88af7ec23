"""User-facing errors: the CLI prints `error: <message>` on one line and exits with code 2."""


class UserError(Exception):
    """A problem with what the user asked for (bad flag, bad data, missing file).

    The message names the problem and the fix, on one line. Bugs raise other exceptions.
    """
