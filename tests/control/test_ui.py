"""GET /ui and its assets: served without a key, from the package, with safe headers and nothing else."""

from __future__ import annotations

import configparser
import pathlib

from proxy.control import ui
from tests.conftest import ADMIN_KEY

ROOT = pathlib.Path(__file__).resolve().parents[2]


async def test_the_page_and_its_assets_need_no_key(gateway):
    gw = await gateway({"auth": {"adminKey": ADMIN_KEY}})
    async with gw.get("/ui") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        page = await r.text()
        csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    for name, kind in (("app.js", "text/javascript"), ("chart.js", "text/javascript"),
                       ("format.js", "text/javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        assert f"ui/{name}" in page or name.endswith(".js")  # modules import each other
        async with gw.get(f"/ui/{name}") as r:
            assert r.status == 200, name
            assert r.headers["Content-Type"].startswith(kind)
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert len(await r.read()) > 100
    async with gw.get("/v1/llm/usage") as r:  # …while the data the page shows needs the admin key
        assert r.status == 401


async def test_only_the_packaged_files_are_served(gateway):
    gw = await gateway()
    for path in ("/ui/nope.js", "/ui/__init__.py", "/ui/..%2Fapp.py", "/ui/%2e%2e%2froutes%2fui.py",
                 "/ui/app.js/x"):
        async with gw.get(path) as r:
            assert r.status == 404, path
            assert (await r.json())["error"]["code"] == "not_found"
    async with gw.post("/ui") as r:
        assert r.status == 405


async def test_a_trailing_slash_goes_to_the_page_and_etags_revalidate(gateway):
    gw = await gateway()
    for path in ("/ui/", "/ui/index.html"):
        async with gw.get(path, allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "../ui", path
    async with gw.get("/ui/") as r:
        assert r.status == 200 and str(r.url).endswith("/ui")
    async with gw.get("/ui/app.js") as r:
        etag = r.headers["ETag"]
        assert r.headers["Cache-Control"] == "no-cache"
    async with gw.get("/ui/app.js", headers={"If-None-Match": etag}) as r:
        assert r.status == 304 and await r.read() == b""
    async with gw.get("/ui/app.js", headers={"If-None-Match": '"other"'}) as r:
        assert r.status == 200


def test_every_asset_is_package_data():
    names = set(ui.assets())
    assert {"index.html", "app.js", "chart.js", "format.js", "app.css", "favicon.svg"} <= names
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["proxy.ui"].split(",")]
    for name in names:
        assert any(pathlib.PurePath(name).match(p) for p in patterns), name


def test_the_page_keeps_the_key_out_of_urls_and_storage_that_outlives_the_tab():
    script = (ROOT / "proxy" / "ui" / "app.js").read_text()
    assert "sessionStorage" in script and "localStorage" not in script
    assert '"X-API-Key"' in script
    assert "searchParams.set" in script and "KEY)" not in script.split("searchParams.set")[1].split("\n")[0]
    assert "innerHTML" not in script  # caller-chosen model names and tags are text, never markup
