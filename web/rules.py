"""Standing business rules: ban items, boost items until a time, cap items per brand or category.

Each change is a log entry, so every server process applies it, and it retires every cached list
(see Engine.lists_generation). Writes need the API key when one is configured (web/auth.py).
"""
from __future__ import annotations

from flask import Blueprint

from web.context import get_service, parse_body, parse_query
from web.schemas import RuleBody, RulePath

bp = Blueprint("rules", __name__)


@bp.post("/rules")
def add_rule() -> tuple[dict, int]:
    return get_service().add_rule(parse_body(RuleBody).to_record()).as_dict(), 201


@bp.get("/rules")
def list_rules() -> dict:
    return {"rules": [rule.as_dict() for rule in get_service().rules()]}


@bp.delete("/rules/<rule_id>")
def delete_rule(rule_id: str) -> dict:
    path = parse_query(RulePath, rule_id=rule_id)
    get_service().delete_rule(path.rule_id)
    return {"rule_id": path.rule_id, "status": "deleted"}
