"""The one exception type users see: the CLI prints its message on one line, exits 2."""


class XtuneError(Exception):
    """Bad input (file, row, key or checkpoint). The message names where the problem is."""

    exit_code = 2
