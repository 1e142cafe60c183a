"""The API contract: GET /openapi.json is valid OpenAPI 3.1, documents every route with the models
the views validate with, and the app keeps it (schemathesis over every operation); GET /docs shows
it in headless Chromium without leaving 127.0.0.1.
"""
from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from playwright.sync_api import expect, sync_playwright
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

import web.openapi
from config import load_settings
from web import create_app
from web.openapi import OPERATIONS, SCHEMA_REF

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SWAGGER_UI = web.openapi.SWAGGER_UI_DIR / "swagger-ui-bundle.js"
API_KEY = "test-key"
ITEMS, USERS = ["iphone", "coffee_maker", "books_001"], ["alice", "user_001"]
DEMO_IDS = {"item_id": ITEMS, "product_id": ITEMS, "user_id": USERS}


def make_app(directory: Path, **overrides):
    """An app on its own SQLite demo store; rate limits off, so fuzzing is never answered 429."""
    defaults = {"database_url": f"sqlite:///{directory / 'store.db'}", "redis_url": None, "rate_limit": ""}
    return create_app(load_settings(**{**defaults, **overrides}))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("openapi"))
    yield app
    app.extensions["recommendation_service"].close()


@pytest.fixture(scope="module")
def document(app) -> dict:
    answer = app.test_client().get("/openapi.json")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    return answer.get_json()


def routes(app) -> set[tuple[str, str]]:
    """(method, rule) of every route a client can call, except Flask's unused static folder.

    Socket.IO (/socket.io) is not among them: its middleware answers before Flask routes anything.
    """
    return {(method, rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def operations(document: dict) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): operation
            for path, item in document["paths"].items() for method, operation in item.items()}


def flask_path(openapi_path: str, app) -> str:
    return next(rule.rule for rule in app.url_map.iter_rules() if web.openapi.openapi_path(rule) == openapi_path)


# ---- the document ----------------------------------------------------------------------------

def test_document_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_is_documented(app, document):
    documented = {(method, flask_path(path, app)) for method, path in operations(document)}
    missing = routes(app) - documented
    assert not missing, f"add these routes to web.openapi.OPERATIONS: {sorted(missing)}"
    stale = set(OPERATIONS) - routes(app)
    assert not stale, f"web.openapi.OPERATIONS lists routes the app does not have: {sorted(stale)}"


def test_request_models_are_the_models_the_views_validate_with(tmp_path, monkeypatch):
    """Call every route once, recording the models its view hands to parse_query and parse_body.

    With a key configured and sent, so that POST /auth/token gets as far as reading its body.
    """
    app = make_app(tmp_path, api_key=API_KEY)
    calls: list[tuple[str, type]] = []
    for rule in app.url_map.iter_rules():
        module = sys.modules[app.view_functions[rule.endpoint].__module__]
        for name in ("parse_query", "parse_body"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, recording(getattr(module, name), name, calls))
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    for method, rule in routes(app):
        calls.clear()
        client.open(concrete(rule), method=method, json={}, headers={"X-API-Key": API_KEY})
        models = dict(calls)
        assert models.get("parse_query") is OPERATIONS[(method, rule)].params, (method, rule)
        assert models.get("parse_body") is OPERATIONS[(method, rule)].body, (method, rule)
    app.extensions["recommendation_service"].close()

    for (method, path), operation in operations(document).items():
        body = OPERATIONS[(method, flask_path(path, app))].body
        if body is not None:
            reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            expected = body.model_json_schema(ref_template=SCHEMA_REF)
            expected.pop("$defs", None)
            assert reference == SCHEMA_REF.format(model=body.__name__)
            assert document["components"]["schemas"][body.__name__] == expected


def recording(parse, name: str, calls: list):
    def record(model, *args, **kwargs):
        calls.append((name, model))
        return parse(model, *args, **kwargs)
    return record


def concrete(path: str) -> str:
    """A URL for a Flask rule or OpenAPI path: each variable becomes its own name (a file: nothing.txt)."""
    for variable in ("<path:filename>", "{filename}"):
        path = path.replace(variable, "nothing.txt")
    return path.translate(str.maketrans("", "", "<>{}"))


def test_count_bounds_come_from_the_settings(tmp_path):
    app = make_app(tmp_path, max_count=40, default_count=7)
    document = app.test_client().get("/openapi.json").get_json()
    app.extensions["recommendation_service"].close()
    count = next(p for p in document["paths"]["/popular"]["get"]["parameters"] if p["name"] == "count")
    assert (count["schema"]["maximum"], count["schema"]["default"]) == (40, 7)


@pytest.mark.parametrize("reads", [False, True], ids=["writes protected", "reads protected"])
def test_security_and_rate_limits_follow_the_settings(tmp_path, reads):
    """Every operation documented with the ApiKey scheme answers 401 without the key, and no other does;
    429 is documented wherever the limiter applies."""
    app = make_app(tmp_path, api_key=API_KEY, api_key_reads=reads, rate_limit="5 per minute")
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": document["components"]["securitySchemes"]["ApiKey"]["description"]}
    protected = set()
    for (method, path), operation in operations(document).items():
        answer = client.open(concrete(path), method=method, json={})
        if "security" in operation:
            protected.add((method, path))
            assert "401" in operation["responses"], (method, path)
        assert (answer.status_code == 401) == ("security" in operation), (method, path, answer.status_code)
        assert ("429" in operation["responses"]) == (path not in ("/health", "/health/live")), (method, path)
    app.extensions["recommendation_service"].close()
    assert ("POST", "/items") in protected and ("GET", "/health") not in protected
    assert (("GET", "/items") in protected) == reads


def test_an_open_server_documents_neither_401_nor_429(document):
    for (method, path), operation in operations(document).items():
        assert "security" not in operation and not {"401", "429"} & set(operation["responses"]), (method, path)


# ---- schemathesis over every operation -------------------------------------------------------

@pytest.fixture(scope="module")
def api_schema(app):
    """The live app's document; ids may be swapped for demo ones, so writes reach the store, not only 404."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    for part in ("body", "query", "path_parameters"):
        schema.hook(f"flatmap_{part}")(lambda context, values: with_demo_ids(values))
    return schema


def with_demo_ids(values):
    """Hypothesis chooses, for each id field, the generated value or an id the demo store knows."""
    if not isinstance(values, dict):
        return st.just(values)
    choices = {name: st.sampled_from([value, *DEMO_IDS[name]]) for name, value in values.items()
               if name in DEMO_IDS and isinstance(value, str)}
    return st.fixed_dictionaries(choices).map(lambda chosen: {**values, **chosen})


api = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@api.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_the_contract(case):
    """No 5xx, and every answer has a documented status, media type and body schema.

    Not derandomized: fresh inputs each run find more. A failure prints a curl that reproduces it,
    and Hypothesis replays it from .hypothesis/ until it is fixed.
    """
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])


# ---- Swagger UI ------------------------------------------------------------------------------

def test_swagger_ui_files_come_from_node_modules(app):
    if not SWAGGER_UI.is_file():
        pytest.fail(f"{SWAGGER_UI} is missing: run `npm install` at the repository root")
    client = app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/docs/assets/swagger-ui-bundle.js" in html and "/openapi.json" in html
    assert "http://" not in html and "https://" not in html
    assert client.get("/docs/assets/swagger-ui-bundle.js").get_data() == SWAGGER_UI.read_bytes()


def test_missing_swagger_ui_is_a_json_404(app, monkeypatch, tmp_path):
    monkeypatch.setattr(web.openapi, "SWAGGER_UI_DIR", tmp_path)
    for path in ("/docs", "/docs/assets/swagger-ui.css"):
        answer = app.test_client().get(path)
        assert answer.status_code == 404
        assert answer.get_json() == {"error": "not_found", "message": "run npm install to fetch Swagger UI"}


@pytest.mark.slow
@pytest.mark.browser
def test_docs_page_lists_every_operation_offline(server):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian chromium (apt-get install -y chromium)")
    if not SWAGGER_UI.is_file():
        pytest.fail(f"{SWAGGER_UI} is missing: run `npm install` at the repository root")
    outside, problems = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(base_url=server.url)
        page.set_default_timeout(10_000)
        page.on("pageerror", lambda error: problems.append(str(error)))

        def only_local(route):
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                return route.continue_()
            outside.append(route.request.url)
            return route.abort()

        page.route("**/*", only_local)
        page.goto("/docs")
        expect(page.locator(".opblock").first).to_be_visible()
        shown = page.locator(".opblock").evaluate_all(
            "blocks => blocks.map(b => [b.querySelector('.opblock-summary-method').textContent,"
            " b.querySelector('.opblock-summary-path').dataset.path])")
        document = page.evaluate("fetch('/openapi.json').then(answer => answer.json())")
        browser.close()
    assert sorted(map(tuple, shown)) == sorted(operations(document))
    assert outside == [] and problems == []
