"""The one exception type the CLI turns into a one-line message and exit code 2."""


class BenchError(Exception):
    """Bad input: the message names the field or file at fault."""
