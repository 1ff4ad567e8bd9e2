"""Which sinks receive a job's result: the job's own routes, else the chat's, else the platform's default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ocr_core.job import ImageJob

DEFAULT_ROUTES: dict[str, tuple[str, ...]] = {
    "feishu": ("feishu-reply", "local"),
}
FALLBACK_ROUTE: tuple[str, ...] = ("local",)


def route_keys(job: ImageJob) -> tuple[str, ...]:
    """The keys a per-chat setting is looked up by, most specific first."""
    return (f"{job.platform}:{job.bot_id}:{job.chat_id}", job.chat_id, f"{job.platform}:{job.bot_id}", f"{job.platform}:*", "*")


def sinks_for(job: ImageJob, routes: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    if job.routes:
        return job.routes
    for key in route_keys(job):
        if key in routes:
            return tuple(routes[key])
    return DEFAULT_ROUTES.get(job.platform, FALLBACK_ROUTE)


def task_for(job: ImageJob, tasks: Mapping[str, str], default: str) -> str:
    """The OCR task a chat asked for (OCRHUB_TASKS), else the engine's default."""
    for key in route_keys(job):
        if key in tasks:
            return tasks[key]
    return default
