"""ocrhub: images posted in chats, read by OCR, delivered where the team wants them."""

__version__ = "0.1.0"
