"""Errors a user can act on: the CLI prints their message as one line, without a traceback."""

from __future__ import annotations


class YodaError(Exception):
    """A problem with the user's input or environment; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(YodaError):
    """The command line asks for something impossible (exit code 2)."""

    exit_code = 2
