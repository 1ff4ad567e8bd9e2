"""The fetcher the worker calls (via ocr_core.sources) for a Feishu job's image bytes."""

from __future__ import annotations

import redis

from bots.feishu.api import api_for
from bots.feishu.bots import bot_in_force
from ocr_core.errors import ImageError
from ocr_core.job import ImageJob
from ocrhub.settings import get_settings


def fetch_image(job: ImageJob, conn: redis.Redis) -> bytes:
    """Raises TransientError when Feishu may serve it later, PermanentError when it never will."""
    settings = get_settings()
    api = api_for(bot_in_force(settings, conn, job.bot_id), conn)
    data = api.download_image(job.message_id, job.image_key, job.resource)
    if len(data) > settings.max_image_bytes:
        raise ImageError(
            f"image {job.image_key} of Feishu message {job.message_id} is {len(data)} bytes, over the "
            f"{settings.max_image_bytes}-byte limit (OCRHUB_MAX_IMAGE_BYTES)",
            "too_large",
        )
    if not data:
        raise ImageError(f"Feishu returned no bytes for image {job.image_key} of message {job.message_id}", "empty")
    return data
