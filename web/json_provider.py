"""Flask's JSON through orjson: serialising answers is a large share of a cached answer's cost.

Only output goes through orjson. Request bodies keep Flask's parser, whose error messages
(`Expecting value: line 1 column 2`) the 400 answers pass on to clients.

`to_json` is the one serialiser of answers. An `orjson.Fragment` in an answer is JSON that was
rendered before (a cached list's, see `web.context.ranked_json`): orjson embeds its bytes as they are.
"""
from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

OPTIONS = orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    sort_keys = False  # keep the contract's field order

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return to_json(obj).decode()

    def response(self, *args: Any, **kwargs: Any):
        data = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(to_json(data), mimetype=self.mimetype)


def to_json(obj: Any) -> bytes:
    return orjson.dumps(obj, default=OrjsonProvider.default, option=OPTIONS)
