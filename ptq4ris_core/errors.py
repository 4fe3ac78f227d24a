"""Errors that reach the user as one line: what went wrong and what to do about it."""


class PTQ4RISError(Exception):
    """Base class: the CLI prints these as ``ptq4ris: error: <message>`` without a traceback."""


class InputError(PTQ4RISError, ValueError):
    """An image, a command or a path given by the user cannot be used as it is."""


class ModelLoadError(PTQ4RISError, RuntimeError):
    """Weights missing, unreadable, or not matching the model they claim to be."""
