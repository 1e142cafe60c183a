"""Every failure answers JSON `{"error", "message", "details"?}`: the contract promises clients
never see Werkzeug's HTML pages or a bare 500, whatever they send."""
from __future__ import annotations

import logging
import re
import time

from flask import Flask, Request, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream

from service import ConflictError, InvalidRequestError, NotFoundError
from storage import Store

log = logging.getLogger(__name__)

# Werkzeug's names give the rest: "Not Found" -> not_found, "Unsupported Media Type" -> unsupported_media_type.
CODES_BY_STATUS = {413: "payload_too_large", 422: "validation_error", 500: "internal_error"}


class ApiError(Exception):
    """An error answer; views may raise it, and every handler below renders through it."""

    def __init__(self, status: int, code: str, message: str, details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def to_response(self) -> Response:
        body: dict = {"error": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        response = jsonify(body)
        response.status_code = self.status
        return response


# No body or Socket.IO message of this API nests more than 3 levels; Python's parser recurses, so a deep
# one (a few KiB of `[`) would raise RecursionError, which is no ValueError: a 500 with a traceback.
MAX_JSON_DEPTH = 32
_JSON_STRINGS = {str: re.compile(r'"(?:[^"\\]|\\.)*"', re.S), bytes: re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)}
_JSON_BRACKETS = {str: re.compile(r"[\[\]{}]"), bytes: re.compile(rb"[\[\]{}]")}
_OPENERS = {str: ("[", "{"), bytes: (b"[", b"{")}


def json_too_deep(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON `text` nests arrays and objects deeper than `limit` (brackets inside strings aside)."""
    kind = type(text)
    opening, opening_object = _OPENERS[kind]
    if text.count(opening) + text.count(opening_object) <= limit:  # every ordinary body: no scan at all
        return False
    depth = 0
    for bracket in _JSON_BRACKETS[kind].findall(_JSON_STRINGS[kind].sub(opening[:0], text)):
        depth += 1 if bracket in (opening, opening_object) else -1
        if depth > limit:
            return True
    return False


class _StrictMaxStream(LimitedStream):
    """A body without Content-Length (chunked) read up to MAX_BODY_BYTES, and refused if more follows.

    Werkzeug's own max-length stream stops reading at the limit without noticing what follows, so a
    chunked body over the limit was cut there and the rest ignored: the cut JSON was then accepted.
    """

    def readall(self) -> bytes:
        data = super().readall()
        if self.is_exhausted and self._stream.read(1):
            self.on_exhausted()  # RequestEntityTooLarge: 413
        return data


class ApiRequest(Request):
    """Says what is wrong with a malformed JSON body (Flask hides that outside debug mode), refuses JSON
    nested deeper than MAX_JSON_DEPTH with 400, and a chunked body over the size limit with 413."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True):
        if (force or self.is_json) and json_too_deep(self.get_data(cache=True)):
            if silent:
                return None
            raise BadRequest(f"malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels")
        return super().get_json(force=force, silent=silent, cache=cache)

    def on_json_loading_failed(self, e: ValueError | None):
        if e is None:  # not a JSON content type: Flask's 415
            return super().on_json_loading_failed(e)
        raise BadRequest(f"malformed JSON body: {e}")

    @cached_property
    def stream(self):
        limit = self.max_content_length
        if (not self.shallow and limit is not None and self.content_length is None
                and "wsgi.input_terminated" in self.environ):  # a server that decodes chunked bodies
            return _StrictMaxStream(self.environ["wsgi.input"], limit, is_max=True)
        return Request.stream.fget(self)


def _api_error(error: ApiError) -> Response:
    return error.to_response()


def _http_error(exc: HTTPException) -> Response | HTTPException:
    """Werkzeug's errors (unknown route, 405, 413, 415, bad JSON) keep their status and headers (Allow)."""
    if exc.code is None or exc.code < 400:  # routing redirects are answers, not errors
        return exc
    code = CODES_BY_STATUS.get(exc.code, exc.name.lower().replace(" ", "_"))
    response = ApiError(exc.code, code, exc.description or exc.name).to_response()
    response.headers.extend((k, v) for k, v in exc.get_headers() if k.lower() != "content-type")
    return response


def _validation_error(exc: ValidationError) -> Response:
    # A check across fields has no location: it is about the query string of a read, else the body.
    whole = "query" if request.method in ("GET", "HEAD") else "body"
    details = [
        {
            "field": ".".join(str(part) for part in error["loc"]) or whole,
            "message": error["msg"].removeprefix("Value error, "),
        }
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return ApiError(422, "validation_error", message, details).to_response()


def _not_found(exc: NotFoundError) -> Response:
    return ApiError(404, "not_found", str(exc)).to_response()


def _invalid_request(exc: InvalidRequestError) -> Response:
    return ApiError(422, "validation_error", str(exc)).to_response()


def _conflict(exc: ConflictError) -> Response:
    return ApiError(409, "conflict", str(exc)).to_response()


STORE_RETRY_AFTER_SECONDS = 2  # the log follower tries the store again every second
STORE_LOG_EVERY_SECONDS = 10.0  # an outage fails every request: one log line per this long, with a count
_store_log = {"at": float("-inf"), "answered": 0}


def _store_unavailable(exc: Exception, reason: str) -> Response:
    """503 with Retry-After: the database cannot be reached or cannot commit (a full disk) right now."""
    _store_log["answered"] += 1
    if time.monotonic() - _store_log["at"] >= STORE_LOG_EVERY_SECONDS:
        log.warning("answering 503: %s (%d answers since the last such line): %s", reason,
                    _store_log["answered"], str(exc).split("\n")[0])
        _store_log.update(at=time.monotonic(), answered=0)
    response = ApiError(503, "service_unavailable", f"{reason}; retry in {STORE_RETRY_AFTER_SECONDS} s").to_response()
    response.headers["Retry-After"] = str(STORE_RETRY_AFTER_SECONDS)
    return response


def _unexpected(exc: Exception) -> Response:
    if (reason := Store.unavailable_reason(exc)) is not None:
        return _store_unavailable(exc, reason)
    log.exception("unhandled error", exc_info=exc)
    return ApiError(500, "internal_error", "internal server error").to_response()


def register_error_handlers(app: Flask) -> None:
    app.request_class = ApiRequest
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(NotFoundError, _not_found)
    app.register_error_handler(InvalidRequestError, _invalid_request)
    app.register_error_handler(ConflictError, _conflict)
    app.register_error_handler(Exception, _unexpected)
