"""docs/webhooks.md: the receiver's copy-paste verifier accepts what the node signs, and refuses a
forgery, a changed body and a replay outside the tolerance."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from node.events import EVENT_TYPES
from node.webhooks import TOLERANCE_S, sign, verify

DOC = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()


def snippet() -> Any:
    (code,) = re.findall(r"```python\n(.*?)```", DOC, re.S)
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), scope)  # our own document
    return scope["verify_meterline"]


def test_the_documented_verifier_takes_what_the_node_signs() -> None:
    check = snippet()
    body = b'{"id":7,"type":"payment.received"}'
    now = int(time.time())
    header = sign("whsec_abc", now, body)
    assert check("whsec_abc", header, body) == now
    assert verify("whsec_abc", header, body) == now


@pytest.mark.parametrize("tamper", ["body", "secret", "old", "future", "no-v1", "garbage"])
def test_the_documented_verifier_refuses_forgeries_and_replays(tamper: str) -> None:
    check = snippet()
    body, secret, now = b'{"id":7}', "whsec_abc", int(time.time())
    stamp = {"old": now - TOLERANCE_S - 5, "future": now + TOLERANCE_S + 5}.get(tamper, now)
    header = sign(secret, stamp, body)
    if tamper == "no-v1":
        header = header.split(",")[0]
    if tamper == "garbage":
        header = "t=x,v1=y"
    args = (secret if tamper != "secret" else "whsec_other", header,
            body if tamper != "body" else b'{"id":8}')
    with pytest.raises(ValueError, match=r"."):
        check(*args)
    with pytest.raises(ValueError, match=r"."):
        verify(*args)


def test_the_document_lists_every_event_type() -> None:
    listed = set(re.findall(r"^\| `([a-z]+\.[a-z]+)` \|", DOC, re.M))
    assert listed == set(EVENT_TYPES)


def test_the_add_webhook_body_is_the_documents() -> None:
    """The handler's checks (node.api.events_out.ADD_WEBHOOK) are the document's schema."""
    from node.api.events_out import ADD_WEBHOOK

    from .test_admin_strict import CODES, SPEC, resolved

    spec = SPEC["components"]["schemas"][ADD_WEBHOOK.schema_name]
    assert spec["additionalProperties"] is False
    assert set(spec["required"]) == ADD_WEBHOOK.required
    assert set(spec["properties"]) == set(ADD_WEBHOOK.fields)
    for name, field in ADD_WEBHOOK.fields.items():
        assert resolved(spec["properties"][name]) == field.schema(), name
    for code in ("BAD_URL", "UNKNOWN_EVENT_TYPE", "BAD_WEBHOOK_ID", "BAD_QUERY"):
        assert CODES[code][0] == 400
    assert CODES["UNKNOWN_WEBHOOK"][0] == 404
    assert CODES["TOO_MANY_WEBHOOKS"][0] == 409
