"""Errors a user can act on. The CLI prints their message as one line and exits non-zero, never a traceback."""


class MemloraError(Exception):
    """Base class: bad input or a state the user must fix (the message says what and how)."""


class BundleError(MemloraError):
    """A bundle is missing, corrupt, tampered with or of an unknown format version."""


class AdapterError(MemloraError):
    """An adapter does not fit the base model, uses an unsupported method, or lies outside the exported union."""


class DataError(MemloraError):
    """A dataset file is missing, malformed or empty after cleaning."""


class ImageError(MemloraError):
    """An image is unreadable, truncated, too large, or given to a text-only model."""


class MetricUnavailable(MemloraError):
    """A metric cannot be computed here (its data or model is missing); the message says how to make it available."""
