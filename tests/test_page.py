"""The page `lokal serve` shows at / (issue 19): the real agent indexes a real folder (a manual, a
document holding HTML that must stay text, a zip bomb that fails, files that are skipped), then
the real `lokal serve --config` answers the page and its JSON, over plain HTTP here and in a real
headless Chromium (Debian's chromium + chromium-driver, driven by selenium) below.

Two servers (module-scoped, one model load each): ``server`` on loopback without a key, and
``keyed`` bound to 0.0.0.0 with an API key, where the page must ask for the key.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lokal.agent.server.page import ASSETS, COOKIE, STATIC

from .test_agent_daemon import TOPICS, AgentProcess, write_config
from .test_parsers import docx_bomb
from .test_serve import TIMEOUT, Server

pytestmark = pytest.mark.slow

PUMP = (
    "To reset pump P-101, switch the controller to manual, hold the red reset button for five "
    "seconds and wait for the green lamp before you open the inlet valve again."
)
EVIL = (
    "Compressor notes: <script>alert(1)</script> and <img src=x onerror=alert(2)> are "
    "characters in this file, never markup."
)
SKIPPED = 24  # with the bomb: more problems than one page of the page's list (20)


@pytest.fixture(scope="module")
def agent_setup(packed_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder indexed by the real agent (run until idle, then stopped); its config."""
    tmp = tmp_path_factory.mktemp("page")
    docs = tmp / "docs"
    (docs / "manuals").mkdir(parents=True)
    manual = [TOPICS[1][:1200], TOPICS[2][:1200], PUMP, TOPICS[3][:1200], TOPICS[4][:1200]]
    (docs / "manuals" / "pump-p101.txt").write_text("\n\n".join(manual) + "\n")
    (docs / "evil.txt").write_text(EVIL + "\n")
    (docs / "bomb.docx").write_bytes(docx_bomb(4 * 1024 * 1024))
    for i in range(SKIPPED):
        (docs / f"broken-{i:02}.docx").write_bytes(b"not a zip archive at all\n")
    cfg = write_config(
        tmp / "agent.toml",
        index=str(tmp / "var" / "index.db"),
        roots=[str(docs)],
        model=str(packed_gguf),
        chunk_tokens=64,
        overlap=8,
        quiet_period=0.4,
        rescan_interval=0,
    )
    agent = AgentProcess(cfg)
    try:
        agent.wait_for(r"INFO idle:")
    finally:
        assert agent.terminate() == 0, agent.log()
    return cfg


def _stop(s: Server) -> None:
    code, log = s.stop(), s.log()
    s.close()
    assert code == 0, log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def server(agent_setup: Path) -> Iterator[Server]:
    s = Server("--config", str(agent_setup), "--no-key")
    yield s
    _stop(s)


@pytest.fixture(scope="module")
def api_key() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def keyed(agent_setup: Path, api_key: str) -> Iterator[Server]:
    s = Server("--config", str(agent_setup), "--host", "0.0.0.0", "--api-key", api_key)
    yield s
    _stop(s)


def _get(server: Server, path: str, **kw: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=TIMEOUT, **kw)


def _csrf(server: Server, client: httpx.Client | None = None) -> str:
    html = (client or httpx).get(f"{server.url}/", timeout=TIMEOUT).text
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert found, html
    return found.group(1)


def _search(server: Server, query: str, **body: Any) -> list[dict[str, Any]]:
    r = httpx.post(f"{server.url}/v1/search", json={"query": query, **body}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["results"]  # type: ignore[no-any-return]


# ---- over HTTP -------------------------------------------------------------------------------


def test_page_and_assets_are_small_local_and_strict(server: Server) -> None:
    page = _get(server, "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    for rule in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                 "frame-ancestors 'none'"):  # fmt: skip
        assert rule in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    total = len(page.content)
    for name, media in ASSETS.items():
        r = _get(server, f"/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == media
        assert r.headers["x-content-type-options"] == "nosniff"
        total += len(r.content)
        # nothing fetched from elsewhere: no absolute URL, no @import, no url() of a font
        assert not re.search(r"https?:|//[a-z]|@import|url\(|@font-face", r.text), name
        assert "innerHTML" not in r.text and "insertAdjacentHTML" not in r.text
    assert total < 100 * 1024, total
    # no inline script or style in the HTML (the CSP would refuse them anyway)
    assert not re.search(r"<script>|<style|\sstyle=|\son[a-z]+=", page.text)
    assert not re.search(r"https?:", page.text)
    # JSON responses carry the headers too, and the door's refusals
    assert _get(server, "/v1/status").headers["x-content-type-options"] == "nosniff"
    refused = _get(server, "/v1/status", headers={"Host": "evil.example"})
    assert refused.status_code == 421 and "content-security-policy" in refused.headers
    # only the page's files are served from the static folder
    assert _get(server, "/index.html").status_code == 404
    assert _get(server, "/static/page.js").status_code == 404
    assert sorted(p.name for p in STATIC.iterdir()) == sorted(["index.html", *ASSETS])


def test_status_has_the_agents_counts_and_reasons(server: Server, agent_setup: Path) -> None:
    r = _get(server, "/v1/page/status")
    assert r.status_code == 200, r.text
    s = r.json()
    a = s["agent"]
    assert a["documents"] == {"indexed": 2, "failed": 1, "skipped": SKIPPED}, a
    assert a["chunks"] > 4 and a["index_bytes"] > 0
    assert a["problem_count"] == SKIPPED + 1
    assert a["state"] == "stopped" and a["running"] is False
    docs = agent_setup.parent / "docs"
    assert [r["path"] for r in a["roots"]] == [str(docs)]
    assert a["roots"][0]["watch"] == "inotify"
    assert "failed" in a["last_scan"] and f"{2 + 1 + SKIPPED} files seen" in a["last_scan"]
    ident = a["identity"]
    assert ident["name"] == "all-MiniLM-L6-v2" and ident["quantization"] == "q8_0"
    assert len(ident["key"]) >= 16
    assert s["facets"]["kinds"] == ["txt"] and {"source", "kind"} <= set(s["facets"]["keys"])
    assert s["reranker"] is False
    assert s["server"]["models"][0]["kind"] == "embedding"


def test_problems_are_paged_and_searchable(server: Server, agent_setup: Path) -> None:
    first = _get(server, "/v1/page/problems", params={"limit": 20}).json()
    assert first["total"] == SKIPPED + 1 and len(first["items"]) == 20
    rest = _get(server, "/v1/page/problems", params={"limit": 20, "offset": 20}).json()
    assert len(rest["items"]) == SKIPPED + 1 - 20
    paths = [i["path"] for i in first["items"] + rest["items"]]
    assert len(set(paths)) == SKIPPED + 1
    bomb = _get(server, "/v1/page/problems", params={"q": "ZIP BOMB"}).json()
    assert bomb["total"] == 1, bomb
    (item,) = bomb["items"]
    assert item["path"].endswith("bomb.docx") and item["status"] == "failed"
    assert "zip bomb" in item["reason"]
    one = _get(server, "/v1/page/problems", params={"q": "broken-07"}).json()
    assert one["total"] == 1 and one["items"][0]["status"] == "skipped"
    assert "not a DOCX file" in one["items"][0]["reason"]
    for bad in ({"offset": "-1"}, {"limit": "0"}, {"limit": "x"}, {"limit": "100000"}):
        r = _get(server, "/v1/page/problems", params=bad)
        assert r.status_code == 400 and "must be an integer" in r.text, r.text


def test_passage_in_context_comes_from_the_index(server: Server) -> None:
    hit = _search(server, "reset pump P-101 red button", k=1)[0]
    assert "P-101" in hit["text"] and hit["path"].endswith("pump-p101.txt")
    p = _get(server, "/v1/page/passage", params={"id": hit["id"], "around": 1}).json()
    assert p["path"] == hit["path"] and p["id"] == hit["id"]
    hits = [c for c in p["chunks"] if c["hit"]]
    assert [c["text"] for c in hits] == [hit["text"]]
    assert 2 <= len(p["chunks"]) <= 3 and p["before"] + p["after"] > 0
    ordinals = [c["ordinal"] for c in p["chunks"]]
    assert ordinals == sorted(ordinals) and len(set(ordinals)) == len(ordinals)
    # a path is not an id: nothing is read from disk by what the URL says
    for bad in (hit["path"], "/etc/passwd", "../../etc/passwd"):
        r = _get(server, "/v1/page/passage", params={"id": bad})
        assert r.status_code == 404 and "root:" not in r.text
    assert _get(server, "/v1/page/passage").status_code == 400
    assert _get(server, "/v1/page/passage", params={"id": hit["id"], "around": "99"}).is_error


def test_key_required_beyond_loopback_session_cookie_and_csrf(keyed: Server, api_key: str) -> None:
    assert _get(keyed, "/").status_code == 200  # the page itself: it must ask for the key
    assert _get(keyed, "/v1/page/status").status_code == 401
    with httpx.Client(timeout=TIMEOUT) as client:
        url = keyed.url
        token = _csrf(keyed, client)
        # no CSRF token, a wrong key: refused, no cookie
        r = client.post(f"{url}/v1/page/session", json={"key": api_key})
        assert r.status_code == 403 and COOKIE not in client.cookies
        r = client.post(
            f"{url}/v1/page/session", json={"key": "wrong"}, headers={"X-CSRF-Token": token}
        )
        assert r.status_code == 401 and COOKIE not in client.cookies
        r = client.post(
            f"{url}/v1/page/session", json={"key": api_key}, headers={"X-CSRF-Token": token}
        )
        assert r.status_code == 204, r.text
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert api_key not in cookie  # a token derived from the key, not the key
        assert client.get(f"{url}/v1/page/status").json()["agent"]["chunks"] > 0
        # a POST on the cookie needs the CSRF token too
        query = {"query": "reset pump"}
        assert client.post(f"{url}/v1/search", json=query).status_code == 403
        r = client.post(f"{url}/v1/search", json=query, headers={"X-CSRF-Token": token})
        assert r.status_code == 200 and r.json()["results"]
        # forgetting it
        r = client.delete(f"{url}/v1/page/session", headers={"X-CSRF-Token": token})
        assert r.status_code == 204
        assert client.get(f"{url}/v1/page/status").status_code == 401
    # the bearer key still works as before, without any token
    bearer = {"Authorization": f"Bearer {api_key}"}
    assert _get(keyed, "/v1/page/status", headers=bearer).status_code == 200
    r = httpx.post(f"{keyed.url}/v1/search", json=query, headers=bearer, timeout=TIMEOUT)
    assert r.status_code == 200
    # a forged cookie is no key
    forged = {"Cookie": f"{COOKIE}={'0' * 64}"}
    assert _get(keyed, "/v1/page/status", headers=forged).status_code == 401
