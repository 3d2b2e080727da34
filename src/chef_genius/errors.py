"""Errors a user can act on: the CLI prints them as one line and exits with a non-zero code."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a config value). Printed without a traceback."""


class TrainingStopped(Exception):
    """Training cannot go on (diverged, out of memory, a checkpoint not written); the message
    says what to do."""
