"""Limits that every worker process shares through Redis, one module per kind:

- window: at most N events per sliding window per key (Feishu: 5 messages per second per chat,
  sinks/feishu_reply.py)
- budget: a request rate per scope that a Retry-After pauses for everybody (Notion: about 3
  requests per second per integration token, sinks/notion/api.py)
- leases: vLLM permits (see leases.py)

Callers pass the Redis key prefix, so each service keeps its own keys. A limit raises
`LimitExceeded` when waiting would take longer than allowed; callers turn it into their own error.
"""


class LimitExceeded(Exception):
    """Waiting for the limit would take longer than the caller allows; `wait` is how long (s), when known."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait
