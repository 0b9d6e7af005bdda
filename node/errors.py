"""Errors the node's APIs map to answers, once, in middleware."""

from __future__ import annotations


class NodeError(Exception):
    """An admin request that cannot be done; `status` is the HTTP status, `code` stable."""

    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


class NotFound(NodeError):
    status = 404
    code = "NOT_FOUND"


class Conflict(NodeError):
    status = 409
    code = "CONFLICT"


class PeerUnavailable(NodeError):
    status = 502
    code = "PEER_UNAVAILABLE"


class PeerNotAuthentic(NodeError):
    """A URL answered, but not with a fresh identity signed by the key it names."""

    status = 502
    code = "PEER_NOT_AUTHENTIC"
