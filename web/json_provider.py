"""Flask's JSON through orjson: serialising answers is a large share of a cached answer's cost.

Only output goes through orjson. Request bodies keep Flask's parser, whose error messages
(`Expecting value: line 1 column 2`) the 400 answers pass on to clients.
"""
from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider


class OrjsonProvider(DefaultJSONProvider):
    sort_keys = False  # keep the contract's field order

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=self.default, option=orjson.OPT_NON_STR_KEYS).decode()

    def response(self, *args: Any, **kwargs: Any):
        data = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(orjson.dumps(data, default=self.default, option=orjson.OPT_NON_STR_KEYS),
                                        mimetype=self.mimetype)
