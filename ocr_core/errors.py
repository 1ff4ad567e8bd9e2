"""Errors the core raises. `PermanentError` subclasses are never retried."""


class OcrHubError(Exception):
    """Base for errors that carry a message meant for a person."""


class PermanentError(OcrHubError):
    """Retrying cannot help: the job lands in the failed-job registry at once."""


class TransientError(OcrHubError):
    """A retry may succeed (network, rate limit, a service briefly down)."""


class ImageError(PermanentError):
    """The bytes are not a readable image; the message says what was wrong."""
