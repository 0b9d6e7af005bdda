"""The OB error shape (``OBErrorResponse1``) as one exception, rendered once by a middleware."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_STATUS_TEXT = {
    400: "400 BadRequest",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 NotFound",
    405: "405 MethodNotAllowed",
    406: "406 NotAcceptable",
    415: "415 UnsupportedMediaType",
    429: "429 TooManyRequests",
    500: "500 InternalServerError",
    503: "503 ServiceUnavailable",
}


@dataclass(frozen=True, slots=True)
class ErrorItem:
    code: str
    """``UK.OBIE.Field.Invalid``, ``UK.OBIE.Resource.NotFound``, ..."""
    message: str
    path: str | None = None


class OBError(Exception):
    """Answer the request with HTTP `status` and an ``OBErrorResponse1`` body."""

    def __init__(self, status: int, code: str, message: str, *, path: str | None = None,
                 more: tuple[ErrorItem, ...] = ()) -> None:
        self.status = status
        self.items = (ErrorItem(code, message, path), *more)
        super().__init__(f"{status} {code}: {message}")

    def body(self, error_id: str) -> dict[str, Any]:
        errors: list[dict[str, Any]] = []
        for item in self.items:
            entry: dict[str, Any] = {"ErrorCode": item.code, "Message": item.message[:500]}
            if item.path:
                entry["Path"] = item.path
            errors.append(entry)
        return {
            "Code": _STATUS_TEXT.get(self.status, str(self.status)),
            "Id": error_id[:40],
            "Message": self.items[0].message[:500],
            "Errors": errors,
        }


def bad_request(code: str, message: str, path: str | None = None) -> OBError:
    return OBError(400, code, message, path=path)


def field_missing(path: str) -> OBError:
    return OBError(400, "UK.OBIE.Field.Missing", f"{path} is required", path=path)


def field_invalid(path: str, message: str) -> OBError:
    return OBError(400, "UK.OBIE.Field.Invalid", message, path=path)


def not_found(message: str, path: str | None = None) -> OBError:
    return OBError(400, "UK.OBIE.Resource.NotFound", message, path=path)
