"""Errors the core raises. `PermanentError` subclasses are never retried."""


class OcrHubError(Exception):
    """Base for errors that carry a message meant for a person."""


class PermanentError(OcrHubError):
    """Retrying cannot help: the job lands in the failed-job registry at once."""


class TransientError(OcrHubError):
    """A retry may succeed (network, rate limit, a service briefly down)."""


class ImageError(PermanentError):
    """The bytes are not a readable image; the message says what was wrong, and `kind` which way, for
    a chat reply in the user's words: "empty", "too_large", "not_an_image", "damaged", "pdf_too_long",
    "pdf_locked", or "unreadable"."""

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


class Deferred(OcrHubError):
    """Not now, and not the job's fault (every OCR server busy or down): run it again later
    without spending one of its retries."""

    def __init__(self, message: str, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class IntakeFull(Exception):
    """Redis is close to its memory cap: refuse new work at the door (503) rather than lose queued work."""

    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"Redis holds {used} of {limit} bytes allowed for intake: try again later")
        self.used = used
        self.limit = limit
