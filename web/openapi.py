"""The API contract as an OpenAPI 3.1 document (GET /openapi.json) and Swagger UI on it (GET /docs).

The document is generated, so it cannot drift from the code: the paths come from the app's url_map,
the parameters and request bodies from the pydantic models that validate them (web/schemas.py),
the answers from web/responses.py. OPERATIONS says which models belong to which route; a route
missing there is missing from the document, and test/test_openapi.py fails until it is added.

Swagger UI is not in the repository: `npm install` fetches the `swagger-ui-dist` package and its
files are served from node_modules, so /docs works without internet (like web/demo.py's client).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Literal

from flask import Blueprint, Flask, Response, current_app, send_from_directory, url_for
from pydantic import BaseModel
from werkzeug.exceptions import NotFound
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Rule

from config.settings import PROJECT_ROOT, Settings
from recommenders import registry
from web import auth, rate_limits
from web import responses as answers
from web import experiment_responses as experiment_answers
from web.context import SETTINGS_KEY
from web.experiment_schemas import ExperimentBody, ExperimentPath
from web.schemas import (
    EventBody,
    InteractionBody,
    ItemBody,
    ItemPatchBody,
    ItemPath,
    ItemsQuery,
    PopularQuery,
    RealtimeQuery,
    RecommendQuery,
    RuleBody,
    RulePath,
    SimilarQuery,
    UserBody,
    UserPath,
    UserRecommendationsQuery,
)

bp = Blueprint("openapi", __name__)

SWAGGER_UI_DIR = PROJECT_ROOT / "node_modules" / "swagger-ui-dist"
DOCUMENT_KEY = "openapi_document"
SCHEMA_REF = "#/components/schemas/{model}"
UNDOCUMENTED_ENDPOINTS = {"static"}  # Flask's own static folder, which this app does not use
SETTINGS_BOUND_PARAMETER = "count"  # its default and maximum come from the settings, not the model


@dataclass(frozen=True)
class Operation:
    """One route and method: what it takes and what it answers."""

    summary: str
    answers: Mapping[int, type[BaseModel] | str]  # status -> JSON answer model, or the media type of a page/file
    params: type[BaseModel] | None = None  # query model; fields named like the rule's variables are path values
    body: type[BaseModel] | None = None  # JSON body model
    not_found: str | None = None  # when a 404 answers (a route with path values may also match no rule)


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/recommendations/<user_id>"): Operation(
        "Personalised recommendations; an unknown user gets popular items",
        {200: answers.UserRecommendations}, UserRecommendationsQuery),
    ("GET", "/recommend"): Operation(
        f"Recommendations by case ({', '.join(registry.cases())}: the recommender registry)",
        {200: answers.CaseRecommendations}, RecommendQuery, not_found="unknown product or category"),
    ("GET", "/realtime-recommend"): Operation(
        "What to show next after a view, add-to-cart or purchase",
        {200: answers.RealtimeRecommendations}, RealtimeQuery, not_found="unknown product"),
    ("GET", "/similar/<item_id>"): Operation(
        "Items similar to an item", {200: answers.SimilarItems}, SimilarQuery, not_found="unknown item"),
    ("GET", "/popular"): Operation(
        "Popular items, overall or in a category; trending favours recent activity",
        {200: answers.PopularItems}, PopularQuery, not_found="unknown category"),
    ("POST", "/interactions"): Operation(
        "Record a rating, view, add-to-cart or purchase; an unknown user is created",
        {201: answers.InteractionRecorded}, body=InteractionBody, not_found="unknown item"),
    ("POST", "/event"): Operation(
        "Record a behavioural event and get fresh recommendations",
        {201: answers.EventRecorded}, body=EventBody, not_found="unknown product"),
    ("POST", "/experiments"): Operation(
        "Start an A/B experiment or a bandit over recommenders (one runs at a time)",
        {201: experiment_answers.ExperimentSummary, 409: answers.ErrorBody}, body=ExperimentBody),
    ("GET", "/experiments"): Operation("Every experiment, newest first", {200: experiment_answers.ExperimentList}),
    ("GET", "/experiments/<experiment_id>"): Operation(
        "An experiment's result per variant: counts, rates with 95% intervals, lift and p-value over the control",
        {200: experiment_answers.ExperimentResult}, ExperimentPath, not_found="unknown experiment"),
    ("POST", "/experiments/<experiment_id>/stop"): Operation(
        "Stop an experiment: its users get the usual recommendations again",
        {200: experiment_answers.ExperimentSummary}, ExperimentPath, not_found="unknown experiment"),
    ("GET", "/items"): Operation("Browse the catalog, or one category of it", {200: answers.ItemPage}, ItemsQuery,
                                 not_found="unknown category"),
    ("GET", "/items/<item_id>"): Operation("One item", {200: answers.Item}, ItemPath, not_found="unknown item"),
    ("POST", "/items"): Operation(
        "Add (201) or update (200) an item", {201: answers.ItemSaved, 200: answers.ItemSaved},
        body=ItemBody),
    ("PATCH", "/items/<item_id>"): Operation(
        "Change only the fields given (POST /items replaces the whole item)", {200: answers.Item}, ItemPath,
        body=ItemPatchBody, not_found="unknown item"),
    ("POST", "/rules"): Operation(
        "Set a standing rule: ban items, boost items until a time, or cap items per brand or category",
        {201: answers.Rule}, body=RuleBody),
    ("GET", "/rules"): Operation("The standing rules in force", {200: answers.Rules}),
    ("DELETE", "/rules/<rule_id>"): Operation(
        "Remove a standing rule", {200: answers.RuleDeleted}, RulePath, not_found="unknown rule"),
    ("GET", "/categories"): Operation("Categories with their item counts", {200: answers.Categories}),
    ("POST", "/users"): Operation(
        "Create (201) a user, or confirm (200) it exists", {201: answers.UserSaved, 200: answers.UserSaved},
        body=UserBody),
    ("GET", "/users/<user_id>"): Operation(
        "A user's profile and newest history", {200: answers.UserProfile}, UserPath, not_found="unknown user"),
    ("DELETE", "/users/<user_id>"): Operation(
        "Erase a user (privacy): profile, events, cached answers and model state",
        {200: answers.UserDeleted}, UserPath, not_found="unknown user"),
    ("POST", "/auth/token"): Operation(
        "A Socket.IO registration token for one user", {200: answers.TokenIssued}, body=auth.TokenRequest,
        not_found="the server has no API_KEY, so registering needs no token"),
    ("GET", "/health"): Operation(
        "Health for load balancers: 503 unless store and model are ok",
        {200: answers.Health, 503: answers.Health}),
    ("GET", "/health/live"): Operation(
        "Liveness: answers while the process serves", {200: answers.Liveness}),
    ("GET", "/stats"): Operation(
        "Cache, request-time, engine, store, push and job counters", {200: answers.Stats}),
    ("GET", "/metrics"): Operation("Prometheus metrics of this process", {200: "text/plain"}),
    ("GET", "/dashboard"): Operation("The monitoring dashboard page", {200: "text/html"}),
    ("GET", "/static/dashboard/<path:filename>"): Operation(
        "The dashboard's stylesheet and script", {200: "*/*"}, not_found="unknown file"),
    ("GET", "/static/vendor/uplot/<path:filename>"): Operation(
        "uPlot, the dashboard's charts, from npm", {200: "*/*"},
        not_found="unknown file, or npm has not fetched uplot"),
    ("GET", "/demo/realtime"): Operation("The real-time demo page", {200: "text/html"}),
    ("GET", "/static/demo/<path:filename>"): Operation(
        "The demo page's stylesheet and script", {200: "*/*"}, not_found="unknown file"),
    ("GET", "/static/vendor/socket.io.min.js"): Operation(
        "The Socket.IO browser client, from npm", {200: "text/javascript"},
        not_found="npm has not fetched socket.io-client"),
    ("GET", "/openapi.json"): Operation("This document", {200: "application/json"}),
    ("GET", "/docs"): Operation(
        "Swagger UI on this document", {200: "text/html"}, not_found="npm has not fetched swagger-ui-dist"),
    ("GET", "/docs/assets/<path:filename>"): Operation(
        "Swagger UI's stylesheet and script, from npm", {200: "*/*"},
        not_found="another file, or npm has not fetched swagger-ui-dist"),
    ("GET", "/docs/init.js"): Operation("The script that starts Swagger UI on /docs", {200: "text/javascript"}),
    ("GET", "/"): Operation("A page linking the demo, the dashboard and these docs", {200: "text/html"}),
    ("GET", "/static/landing/<path:filename>"): Operation(
        "The landing page's stylesheet", {200: "*/*"}, not_found="unknown file"),
}

# The error answers (web/errors.py), shared as components.responses; 405 cannot belong to an operation.
ERRORS = {
    400: ("BadRequest", "malformed JSON body"),
    401: ("Unauthorized", "missing or wrong X-API-Key"),
    404: ("NotFound", "not found"),
    405: ("MethodNotAllowed", "another method than the documented ones; the Allow header lists those"),
    409: ("Conflict", "the body's event_id was recorded before for another event"),
    413: ("PayloadTooLarge", "body over the size limit"),
    415: ("UnsupportedMediaType", "body is not application/json"),
    422: ("ValidationError", "a missing, malformed or out-of-range field; `details` lists them"),
    429: ("TooManyRequests", "over the per-client rate limit; Retry-After says when to come back"),
}

DOCS_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Recommendation API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="$css">
</head>
<body>
  <div id="swagger-ui" data-url="$document"></div>
  <script src="$bundle"></script>
  <script src="$init"></script>
</body>
</html>
""")
DOCS_INIT_DIR = PROJECT_ROOT / "static" / "docs"
# The only files of swagger-ui-dist that /docs loads; the package's demo pages, source maps and the
# rest are not served.
DOCS_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js"})


@bp.get("/openapi.json")
def document() -> dict:
    """Built on first use, when every blueprint is registered, then kept for the app's lifetime."""
    if DOCUMENT_KEY not in current_app.extensions:
        current_app.extensions[DOCUMENT_KEY] = build_document(current_app)
    return current_app.extensions[DOCUMENT_KEY]


@bp.get("/docs")
def docs() -> Response:
    """A page of our own, so it points at this app's document and loads nothing from outside."""
    _swagger_ui_dir()  # a JSON 404 when npm has not fetched Swagger UI
    page = DOCS_PAGE.substitute(css=url_for(".docs_asset", filename="swagger-ui.css"),
                                bundle=url_for(".docs_asset", filename="swagger-ui-bundle.js"),
                                init=url_for(".docs_init"), document=url_for(".document"))
    return Response(page, mimetype="text/html")  # web/landing.py adds the Content-Security-Policy


@bp.get("/docs/assets/<path:filename>")
def docs_asset(filename: str) -> Response:
    directory = _swagger_ui_dir()
    if filename not in DOCS_ASSETS:
        raise NotFound(f"/docs uses only {', '.join(sorted(DOCS_ASSETS))} from swagger-ui-dist")
    return send_from_directory(directory, filename)


@bp.get("/docs/init.js")
def docs_init() -> Response:
    return send_from_directory(DOCS_INIT_DIR, "init.js")


def _swagger_ui_dir() -> Path:
    if not (SWAGGER_UI_DIR / "swagger-ui-bundle.js").is_file():
        raise NotFound("run npm install to fetch Swagger UI")
    return SWAGGER_UI_DIR


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every rule in OPERATIONS, as this app's settings configure it."""
    settings: Settings = app.extensions[SETTINGS_KEY]
    builder = _Builder(settings)
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if rule.endpoint in UNDOCUMENTED_ENDPOINTS:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation = OPERATIONS.get((method, rule.rule))
            if operation is not None:
                paths.setdefault(openapi_path(rule), {})[method.lower()] = builder.operation(method, rule, operation)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Real-time recommendation API", "version": "1.0.0", "description": _description(settings)},
        "paths": paths,
        "components": {
            "schemas": builder.schemas,
            "responses": builder.error_responses(),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": auth.API_KEY_HEADER,
                                           "description": _key_policy(settings)}},
        },
    }


class _Builder:
    """Turns OPERATIONS entries into operation objects, collecting the model schemas they refer to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schemas: dict[str, dict] = {}

    def operation(self, method: str, rule: Rule, operation: Operation) -> dict[str, Any]:
        result: dict[str, Any] = {"operationId": rule.endpoint, "summary": operation.summary,
                                  "tags": [rule.endpoint.partition(".")[0]]}
        parameters = self._parameters(rule, operation.params)
        if parameters:
            result["parameters"] = parameters
        if operation.body is not None:
            schema = self._ref(operation.body, "validation")
            result["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        responses = {str(status): self._answer(status, answer) for status, answer in operation.answers.items()}
        for status in self._error_statuses(method, rule, operation):
            responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
        if "404" in responses:  # OpenAPI 3.1 lets a reference say what its 404 means here
            responses["404"]["description"] = operation.not_found or "no route matches (a path value holds '/')"
        result["responses"] = responses
        if auth.needs_key(method, rule.rule, rule.rule, self.settings):
            result["security"] = [{"ApiKey": []}]
        return result

    def error_responses(self) -> dict[str, dict[str, Any]]:
        content = {"application/json": {"schema": self._ref(answers.ErrorBody, "serialization")}}
        return {name: {"description": description, "content": content} for name, description in ERRORS.values()}

    def _parameters(self, rule: Rule, model: type[BaseModel] | None) -> list[dict[str, Any]]:
        """Path values first (a string unless the model says more), then the model's query fields."""
        schema = self._inline(model) if model is not None else {}
        properties, required = schema.get("properties", {}), set(schema.get("required", ()))
        path = [{"name": name, "in": "path", "required": True, "schema": properties.get(name, {"type": "string"})}
                for name in sorted(rule.arguments)]
        query = [{"name": name, "in": "query", "required": name in required, "schema": self._query_value(name, value)}
                 for name, value in properties.items() if name not in rule.arguments]
        return path + query

    def _query_value(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        """A query parameter is absent rather than null: drop the model's `None` alternative."""
        schema = dict(schema)
        alternatives = [option for option in schema.pop("anyOf", ()) if option != {"type": "null"}]
        if len(alternatives) == 1:
            schema.update(alternatives[0])
        elif alternatives:
            schema["anyOf"] = alternatives
        if schema.get("default", ...) is None:
            del schema["default"]
        if name == SETTINGS_BOUND_PARAMETER:
            schema.update(default=self.settings.default_count, maximum=self.settings.max_count)
        return schema

    def _answer(self, status: int, answer: type[BaseModel] | str) -> dict[str, Any]:
        if isinstance(answer, str):
            content = {answer: {}}
        else:
            content = {"application/json": {"schema": self._ref(answer, "serialization")}}
        return {"description": HTTP_STATUS_CODES[status], "content": content}

    def _error_statuses(self, method: str, rule: Rule, operation: Operation) -> list[int]:
        statuses = []
        if auth.needs_key(method, rule.rule, rule.rule, self.settings):
            statuses.append(401)
        if operation.not_found or rule.arguments:
            statuses.append(404)
        if operation.body is not None:
            statuses += [400, 413, 415]
        if operation.body is not None and "event_id" in operation.body.model_fields:
            statuses.append(409)
        if operation.body is not None or operation.params is not None:
            statuses.append(422)
        if self.settings.rate_limit and rule.rule not in rate_limits.EXEMPT_PATHS:
            statuses.append(429)
        return sorted(statuses)

    def _ref(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, str]:
        self._collect(model.__name__, self._inline(model, mode))
        return {"$ref": SCHEMA_REF.format(model=model.__name__)}

    def _inline(self, model: type[BaseModel], mode: Literal["validation", "serialization"] = "validation") -> dict:
        """The model's own schema; the models it refers to go to components.schemas."""
        schema = model.model_json_schema(ref_template=SCHEMA_REF, mode=mode)
        for name, definition in schema.pop("$defs", {}).items():
            self._collect(name, definition)
        return schema

    def _collect(self, name: str, schema: dict) -> None:
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are both named {name}: rename one model")


def openapi_path(rule: Rule) -> str:
    """Flask's `/items/<item_id>` and `/files/<path:name>` as OpenAPI's `/items/{item_id}`, `/files/{name}`."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)


def _key_policy(settings: Settings) -> str:
    policy = ("Needed only when the server has API_KEY set: then the write and admin routes need it, "
              "and so do the reads (except health checks, docs, pages and their files) when API_KEY_READS is on.")
    if not settings.api_key:
        return f"{policy} This server has no API_KEY: every route is open."
    return f"{policy} This server {'protects reads too' if settings.api_key_reads else 'protects writes only'}."


def _description(settings: Settings) -> str:
    return (
        "Every API answer is JSON (pages, their files and /metrics aside), and every error is "
        "`{\"error\", \"message\", \"details\"?}` (components.responses). A method other than the documented ones "
        f"answers 405 with an Allow header; a body over {settings.max_body_bytes} bytes answers 413. "
        "docs/api-contract.md explains the routes and the Socket.IO events (path /socket.io), which OpenAPI "
        "cannot describe; for the HTTP routes this generated document is the authoritative contract."
    )
