"""What the hostile-input tests send and how they judge the answers (tests/faults/
test_hostile_daemons.py runs them against real daemons).

The attacker is the manufacturer, with its own key and stored state (tests/adversarial/
toolkit.py), or Mallory, who is no party at all. Its bodies:

- *noise*: random bytes;
- *mutated*: a genuine message of its own (its next balance proof, a unilateral claim, dispute
  evidence, a registration, the proposal and acceptance of the open channel), with bytes
  flipped, cut, inserted or spliced — every such change breaks the encoding or a signature;
- *re-signed*: a genuine message with one field replaced by any value of its wire type,
  re-signed by Mallory; or a balance proof with one field replaced, re-signed by the
  manufacturer itself (any change of a proof breaks its nonce, tariff or digest chain).

Each must be refused: a 4xx with a decodable `Refusal` or `Error`, never a 5xx, no hang, and
nothing changed at the target (the admin API's view before and after).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from protocol.crypto import Signer
from protocol.errors import ProtocolError
from protocol.messages import Error, Refusal
from protocol.records import Bin, Message, Text, UInt, decode_message

MALLORY = Signer.from_label("mallory")
NODE_POSTS = ("/p2p/proposal", "/p2p/acceptance", "/p2p/funding", "/p2p/proof",
              "/p2p/dispute", "/p2p/payout", "/p2p/close", "/p2p/announce",
              "/p2p/payout-returned", "/p2p/checkpoint", "/p2p/topup")
ARBITER_POSTS = ("/p2p/register", "/p2p/unilateral", "/p2p/evidence", "/p2p/close",
                 "/p2p/announce", "/p2p/payout-account", "/p2p/checkpoint")


@st.composite
def mutated(draw: st.DrawFn, genuine: bytes) -> bytes:
    """`genuine` with one to four byte-level changes (never `genuine` itself)."""
    data = bytearray(genuine)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(("flip", "cut", "insert", "splice", "set")))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del data[at:at + draw(st.integers(1, 16))]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif how == "splice":
            data = data[:at] + bytearray(draw(st.binary(max_size=64))) + data[at:][::-1]
        elif data:
            data[at] = draw(st.sampled_from((0x00, 0x7F, 0xC0, 0xC1, 0xCC, 0xCF, 0xD3,
                                             0xDC, 0xDD, 0xFF)))
    result = bytes(data)
    if result == genuine:
        result += b"\x00"
    return result


def _value(draw: st.DrawFn, kind: object) -> Any:
    if isinstance(kind, UInt):
        return draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 1_000),
                              st.sampled_from((kind.max_value, kind.max_value + 1))
                              .filter(lambda v: v < 2**64)))
    if isinstance(kind, Bin):
        return draw(st.one_of(st.binary(max_size=64),
                              *(st.binary(min_size=n, max_size=n) for n in kind.sizes)))
    if isinstance(kind, Text):
        return draw(st.text(max_size=kind.max_len + 2))
    return None


@st.composite
def resigned(draw: st.DrawFn, genuine: Message, signer: Signer) -> bytes:
    """`genuine` with one plain field changed, signed again by `signer` (if it is signed)."""
    fields = [(name, kind) for name, kind in genuine.FIELDS
              if isinstance(kind, UInt | Bin | Text) and name != "signature"]
    name, kind = draw(st.sampled_from(fields))
    value = _value(draw, kind)
    changed = dataclasses.replace(genuine, **{name: value})  # type: ignore[type-var]
    if hasattr(changed, "signed_by") and "signature" in dict(genuine.FIELDS):
        changed = changed.signed_by(signer)
    try:
        body = changed.encode()
    except (OverflowError, TypeError, ValueError):
        body = genuine.encode()[:-1]
    if body == genuine.encode():
        body += b"\x00"
    return body


def judge(status: int, body: bytes, *, post: bool) -> str:
    """'' when the answer is a typed refusal; else what is wrong with it."""
    if status >= 500:
        return f"{status}: {body[:300]!r}"
    if not 400 <= status < 500:
        return f"not refused: {status}"
    try:
        message = decode_message(body)
    except ProtocolError as exc:
        return f"{status} with a body that is no message ({exc}): {body[:100]!r}"
    expected = (Refusal, Error) if post else (Error,)
    if not isinstance(message, expected):
        return f"{status} answered with a {type(message).__name__}"
    return ""
