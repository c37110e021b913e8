"""Standard Webhooks signatures and bodies (https://www.standardwebhooks.com), through the specification's
own library: ``webhook-signature`` is ``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body`` with the
secret's bytes; during a rotation two such signatures, space-separated."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime

import orjson
from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature_header(secrets_in_use: Sequence[str], message_id: str, at: datetime, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret that signs now (the newest first)."""
    text = body.decode("utf-8")
    return " ".join(Webhook(secret).sign(message_id, at, text) for secret in secrets_in_use)


def event_body(event_type: str, occurred_at: str, record: bytes) -> bytes:
    """``{"type": "suspension.<type>", "timestamp": <occurred_at>, "data": <the record exactly as on the
    topic>}``: the record's bytes are spliced in, never decoded and encoded again."""
    return b"".join((b'{"type":', orjson.dumps(f"suspension.{event_type}"), b',"timestamp":',
                     orjson.dumps(occurred_at), b',"data":', record.strip(), b"}"))


def test_body(endpoint_id: str, space_id: str, at: str) -> bytes:
    """What "send test event" sends: no customer's data, only where it comes from."""
    return orjson.dumps({"type": "webhook.test", "timestamp": at,
                         "data": {"endpoint_id": endpoint_id, "space_id": space_id}})
