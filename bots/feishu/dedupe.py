"""Persistent dedupe of Feishu deliveries: one claim per message_id (and event_id), atomic across replicas.

Feishu re-sends an event after a timeout (15 s, 5 min, 1 h, 6 h) and sometimes after a 200, with
the same message_id but not always the same event_id, so the message is what is claimed.

A claim is made in the same Redis transaction that queues the batch it belongs to, and stores that
batch's token: either both happen or neither, and the worker that expands a batch keeps only the
messages whose claim holds its token (see intake.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from redis.client import Pipeline

PREFIX = "ocrhub:feishu:seen"

# KEYS are (message key, event key) pairs; the answer is one 0 or 1 per pair, in order, so a
# message twice in one batch is won only the first time. The message key alone decides: a message
# lost on its event key alone would hold no claim, and the worker, which reads an absent claim as
# expired, would read it all the same, then again on a re-send with a fresh event_id. Sent as EVAL,
# not EVALSHA: it rides in a pipeline, where redis-py would precede an EVALSHA with a SCRIPT EXISTS
# round trip.
CLAIM = """
local won = {}
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    won[#won + 1] = 0
  else
    redis.call('SET', KEYS[i], ARGV[2], 'EX', ARGV[1])
    redis.call('SET', KEYS[i + 1], ARGV[2], 'EX', ARGV[1])
    won[#won + 1] = 1
  end
end
return won
"""

Delivery = tuple[str, str]  # (message_id, event_id)


class Dedupe:
    def __init__(self, bot_id: str, ttl: int) -> None:
        self.bot_id = bot_id
        self.ttl = ttl

    def message_key(self, message_id: str) -> str:
        return f"{PREFIX}:{self.bot_id}:message:{message_id}"

    def keys(self, message_id: str, event_id: str) -> list[str]:
        message_key = self.message_key(message_id)
        return [message_key, f"{PREFIX}:{self.bot_id}:event:{event_id}" if event_id else message_key]

    def claim_all(self, deliveries: Sequence[Delivery], token: str, pipe: Pipeline) -> None:
        """Queue the claims on `pipe`; its result is a list of 1 (first delivery) or 0 (re-send)."""
        keys = [key for message_id, event_id in deliveries for key in self.keys(message_id, event_id)]
        pipe.eval(CLAIM, len(keys), *keys, self.ttl, token)


def owned(conn: redis.Redis, message_keys: Sequence[str], token: str) -> list[bool]:
    """Which of these claims were won by the batch holding `token`. A claim that has expired (the
    batch waited longer than the TTL) counts as won: its batch was queued with it, and nothing
    else holds it now.
    """
    if not message_keys:
        return []
    return [value is None or value == token.encode() for value in conn.mget(list(message_keys))]
