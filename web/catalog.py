"""The item catalog: browse, look up, add or update items, list categories."""
from __future__ import annotations

from flask import Blueprint

from service import NotFoundError
from web.context import get_service, parse_body, parse_query
from web.schemas import ItemBody, ItemPatchBody, ItemPath, ItemsQuery

bp = Blueprint("catalog", __name__)


@bp.get("/items")
def list_items() -> dict:
    query = parse_query(ItemsQuery)
    items, total = get_service().list_items(query.category, query.limit, query.offset)
    if query.category is not None and total == 0:  # categories exist through their items, as in /popular
        raise NotFoundError("category", query.category)
    return {"items": [item.as_dict() for item in items], "total": total}


@bp.get("/items/<item_id>")
def get_item(item_id: str) -> dict:
    path = parse_query(ItemPath, item_id=item_id)
    return get_service().get_item(path.item_id).as_dict()


@bp.post("/items")
def upsert_item() -> tuple[dict, int]:
    item = parse_body(ItemBody).to_record()
    created = get_service().upsert_item(item)
    return {"item": item.as_dict(), "status": "created" if created else "updated"}, 201 if created else 200


@bp.patch("/items/<item_id>")
def patch_item(item_id: str) -> dict:
    """Change only the fields the body names (POST /items replaces the whole item)."""
    path = parse_query(ItemPath, item_id=item_id)
    return get_service().patch_item(path.item_id, parse_body(ItemPatchBody).changes()).as_dict()


@bp.get("/categories")
def categories() -> dict:
    return {"categories": [{"name": name, "count": count} for name, count in get_service().categories()]}
