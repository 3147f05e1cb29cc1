"""Errors every meshproof command reports as one line and exit code 2."""


class UsageError(Exception):
    """Bad input or a missing prerequisite: printed as one line, exit 2."""
