"""The JSON bodies vLLM 0.32's OpenAI server writes, field for field (pydantic dumps of its protocol models:
`model_dump()` for whole responses, `model_dump_json(exclude_unset=True)` for stream chunks)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from http import HTTPStatus
from typing import Any

VERSION = "0.32.0"
QUEUE_FULL = "The engine is currently busy and cannot accept new requests. Please try again later or on a different instance."


def dumps(body: Any) -> str:
    """Compact UTF-8 JSON, as pydantic and starlette's JSONResponse write it."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def random_uuid() -> str:
    return f"{uuid.uuid4().int & ((1 << 64) - 1):016x}"


def fingerprint(model: str, max_model_len: int) -> str:
    """`vllm-<version>-<8 hex>`, as --fingerprint-mode full answers on one GPU (the hash is of vLLM's config)."""
    return f"vllm-{VERSION}-{hashlib.sha256(f'{model}|{max_model_len}'.encode()).hexdigest()[:8]}"


def error(status: int, message: str, err_type: str | None = None, param: str | None = None) -> dict[str, Any]:
    """vLLM's ErrorResponse; without `err_type`, the type a GracefulHTTPError gets (the status phrase)."""
    return {"error": {"message": message, "type": err_type or HTTPStatus(status).phrase, "param": param, "code": status}}


def queue_full() -> dict[str, Any]:
    return error(503, QUEUE_FULL)


def model_not_found(model: str, served: str) -> dict[str, Any]:
    return error(404, f"The model `{model}` does not exist. Valid aliases: {served}.", "NotFoundError", "model")


def bad_request(message: str, param: str | None = None) -> dict[str, Any]:
    return error(400, message, "BadRequestError", param)


def injected(status: int) -> dict[str, Any]:
    """What a fault knob answers: vLLM's 500 for an engine error, the status phrase otherwise."""
    if status == 500:
        return error(500, "EngineCore encountered an issue. See stack trace (above) for the root cause.", "InternalServerError")
    return error(status, HTTPStatus(status).phrase)


UNAUTHORIZED = {"error": "Unauthorized"}


def model_list(model: str, root: str, max_model_len: int, created: int) -> dict[str, Any]:
    permission = {
        "id": f"modelperm-{random_uuid()}", "object": "model_permission", "created": created,
        "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True, "allow_search_indices": False,
        "allow_view": True, "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False,
    }
    card = {"id": model, "object": "model", "created": created, "owned_by": "vllm", "root": root, "parent": None,
            "max_model_len": max_model_len, "permission": [permission]}
    return {"object": "list", "data": [card]}


def usage(prompt_tokens: int, completion_tokens: int, *, full: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens, "completion_tokens": completion_tokens}
    if full:
        body |= {"prompt_tokens_details": None, "completion_tokens_details": None}
    return body


def completion(request_id: str, created: int, model: str, text: str, finish_reason: str, prompt_tokens: int,
               completion_tokens: int, fingerprint: str | None) -> dict[str, Any]:
    message = {"role": "assistant", "content": text, "refusal": None, "annotations": None, "audio": None, "function_call": None, "reasoning": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason, "stop_reason": None, "token_ids": None, "routed_experts": None}
    return {
        "id": request_id, "object": "chat.completion", "created": created, "model": model, "choices": [choice],
        "service_tier": None, "system_fingerprint": fingerprint, "usage": usage(prompt_tokens, completion_tokens, full=True),
        "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None, "kv_transfer_params": None,
        "ec_transfer_params": None, "metrics": None,
    }


def _chunk(request_id: str, created: int, model: str, choices: list[dict[str, Any]], **extra: Any) -> str:
    return "data: " + dumps({"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices, **extra}) + "\n\n"


def role_chunk(request_id: str, created: int, model: str) -> str:
    choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    return _chunk(request_id, created, model, [choice], prompt_token_ids=None, prompt_text=None)


def token_chunk(request_id: str, created: int, model: str, text: str, finish_reason: str | None, fingerprint: str | None) -> str:
    """One token; the last one carries the finish reason, and the fingerprint when no usage chunk follows."""
    choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish_reason}
    if finish_reason is not None:
        choice["stop_reason"] = None
    choice["token_ids"] = None
    extra = {"system_fingerprint": fingerprint} if fingerprint is not None else {}
    return _chunk(request_id, created, model, [choice], **extra)


def usage_chunk(request_id: str, created: int, model: str, prompt_tokens: int, completion_tokens: int, fingerprint: str) -> str:
    return _chunk(request_id, created, model, [], usage=usage(prompt_tokens, completion_tokens, full=False), system_fingerprint=fingerprint)


def stream_error(body: dict[str, Any]) -> str:
    """An error inside a stream already answered 200: json.dumps with its default separators, as vLLM writes it."""
    return f"data: {json.dumps(body)}\n\n"


DONE = "data: [DONE]\n\n"


def now() -> int:
    return int(time.time())
