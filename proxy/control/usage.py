"""GET /v1/llm/usage: the usage and savings report over a window (admin key; docs/records.md, the report).

    ?from=&to=&groupBy=model|provider|apiKey|tag|tag:KEY&filter=FIELD=VALUE,…[&interval=1m|5m|1h|1d…]
Parameters as in `proxy.control.report`; the SQL runs on the usage store's own thread. With
`interval`, the answer adds `interval` and `series`: the figures per time bucket and group
(`proxy.control.series`; the window stays [from, to)).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy.control import report as reporting
from proxy.control import series
from proxy.gateway import GATEWAY


async def report(http_request: web.Request) -> web.Response:
    gw = http_request.app[GATEWAY]
    gw.auth.admin(http_request.headers)
    q = http_request.query
    query = reporting.parse(q.get("from"), q.get("to"), q.get("groupBy"), q.get("filter"))
    seconds = series.parse_interval(q["interval"], query) if "interval" in q else None
    result = await gw.store.query(reporting.run, query)
    if seconds:
        result.update(await gw.store.query(series.run, query, seconds))
    return web.Response(body=orjson.dumps(result), content_type="application/json")
