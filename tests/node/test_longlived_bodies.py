"""The long-lived channel routes' bodies (node.api.settle) are the document's, member by member,
and every code their checks answer is in its table — as test_admin_strict holds the others."""

from __future__ import annotations

import pytest

from node.api import settle
from node.api.validate import Body

from .test_admin_strict import CODES, SPEC, resolved

BODIES = (settle.SETTLE, settle.SCHEDULE, settle.RUN, settle.TOPUP)


@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.schema_name)
def test_each_checkpoint_and_topup_request_schema_is_the_documents(body: Body) -> None:
    spec = SPEC["components"]["schemas"][body.schema_name]
    assert spec["additionalProperties"] is False, "request bodies are closed"
    assert set(spec.get("required", [])) == body.required
    assert set(spec["properties"]) == set(body.fields)
    for name, field in body.fields.items():
        assert resolved(spec["properties"][name]) == field.schema(), name


def test_every_code_the_checkpoint_and_topup_routes_answer_is_documented() -> None:
    codes = {"NOTHING_TO_SETTLE", "TOO_MANY_TOPUPS", "NOT_COSIGNED", "NOT_CONFIRMED",
             "WRONG_CURRENCY", "INVALID_STATE"}
    for body in BODIES:
        for field in body.fields.values():
            codes.add((getattr(field, "inner", None) or field).code)  # type: ignore[attr-defined]
    assert set(codes) <= set(CODES)
    assert {c: CODES[c][0] for c in ("NOT_COSIGNED", "NOT_CONFIRMED")} == {
        "NOT_COSIGNED": 504, "NOT_CONFIRMED": 504}
