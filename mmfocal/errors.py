"""The errors mmfocal's library functions raise for bad input: each message names the problem and
the fix in one line. Library code raises them; a tool's ``main`` turns them into ``SystemExit``
with that line (:func:`mmfocal.cli.exit_on_error`), so a command line stops with the message and
no traceback, while a caller in Python gets an exception it can catch."""

__all__ = ['MMFocalError', 'ConfigError', 'BadArgumentError', 'MissingFileError']


class MMFocalError(Exception):
    """Bad input to mmfocal, with a one-line message that says what to do."""


class ConfigError(MMFocalError, ValueError):
    """A config (or an override of it) the tools cannot run: wrong scope, missing settings, a
    setting this machine cannot honour."""


class BadArgumentError(MMFocalError, ValueError):
    """An argument outside what it may be (a stage the backbone does not have, a point off the image)."""


class MissingFileError(MMFocalError, FileNotFoundError):
    """A file or directory named by the caller or by a config is not there."""
