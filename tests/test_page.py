"""The page `lokal serve` shows at / (issue 19): the real agent indexes a real folder (a manual, a
document holding HTML that must stay text, a zip bomb that fails, files that are skipped), then
the real `lokal serve --config` answers the page and its JSON, over plain HTTP here and in a real
headless Chromium (Debian's chromium + chromium-driver, driven by selenium) below.

Two servers (module-scoped, one model load each): ``server`` on loopback without a key, and
``keyed`` bound to 0.0.0.0 with an API key, where the page must ask for the key.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lokal.agent.server.page import ASSETS, COOKIE, STATIC

from .test_agent_daemon import TOPICS, AgentProcess
from .test_agent_sync import write_config
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
CENTRE = "postgresql://box@127.0.0.1:1/fleet"
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
        # a centre that is not there (nothing listens on port 1): the sync lag grows
        {"url": CENTRE, "site": "plant-a"},
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
        agent.wait_for(r"sync to .* failed")
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
    sync = a["sync"]
    assert sync["site"] == "plant-a" and sync["last_success"] is None, sync
    assert sync["behind"] >= a["chunks"] and "127.0.0.1" in sync["last_error"], sync
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


# ---- in a real headless Chromium -------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: where the phone-width screenshot goes (build/ is not committed)
ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "artifacts"
WAIT = 60.0


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's chromium, headless, with a fresh profile; its network and console logged."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(
            f"no {CHROMIUM} / {CHROMEDRIVER}: apt-get install chromium chromium-driver (.ci/run "
            "installs them; CI must have them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-default-apps", "--window-size=1200,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _fresh(driver: Any, url: str) -> None:
    """A clean start: no cookies, the logs emptied, the page loaded."""
    driver.delete_all_cookies()
    driver.get_log("performance")
    driver.get_log("browser")
    driver.get(url)


def _until(driver: Any, check: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(lambda d: check(d), message=what)


def _text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return "\n".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))


def _rows(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#problems tbody tr")  # type: ignore[no-any-return]


def _requests(driver: Any) -> list[str]:
    """The URLs the page asked for since the last call (Chromium's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _search_in_page(driver: Any, query: str) -> None:
    """Type the question and press Enter, as a keyboard user does."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(query, Keys.ENTER)
    _until(driver, lambda d: "results" in _text(d, "#search-note"), f"results for {query!r}")


def test_browser_status_and_search(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _fresh(browser, server.url)
    facts = _until(
        browser, lambda d: "indexed" in _text(d, "#facts") and _text(d, "#facts"), "status"
    )
    for want in ("2 indexed", "1 failed", f"{SKIPPED} skipped", "all-MiniLM-L6-v2", "q8_0",
                 "no agent running", "files seen", "plant-a", "changes behind"):  # fmt: skip
        assert want in facts, facts
    assert str(agent_docs(server)) in _text(browser, "#roots")
    # the problems: paged, then filtered
    _until(browser, lambda d: len(_rows(d)) == 20, "the first page of problems")
    assert _text(browser, "#problem-total") == f"({SKIPPED + 1})"
    browser.find_element(By.ID, "next").click()
    _until(browser, lambda d: len(_rows(d)) == SKIPPED + 1 - 20, "the second page")
    browser.find_element(By.ID, "pq").send_keys("zip bomb", Keys.ENTER)
    _until(browser, lambda d: _text(d, "#problem-total") == "(1)", "the bomb alone")
    row = _text(browser, "#problems tbody")
    assert "bomb.docx" in row and "failed" in row and "zip bomb" in row, row

    _search_in_page(browser, "reset pump P-101")
    first = browser.find_elements(By.CSS_SELECTOR, "#results .result")[0]
    assert first.find_element(By.CSS_SELECTOR, ".path").text.endswith("pump-p101.txt")
    assert "P-101" in first.find_element(By.CSS_SELECTOR, ".text").text
    assert re.search(r"lines? \d+", first.find_element(By.CSS_SELECTOR, ".lines").text)
    assert "score" in first.find_element(By.CSS_SELECTOR, ".score").text
    marks = {m.text.lower() for m in first.find_elements(By.CSS_SELECTOR, ".text mark")}
    assert {"reset", "pump", "101"} <= marks, marks
    # the passage in context, opened from the keyboard
    button = first.find_element(By.CSS_SELECTOR, "button.context")
    button.send_keys(Keys.ENTER)
    _until(
        browser, lambda d: first.find_elements(By.CSS_SELECTOR, ".passage .chunk.hit"), "context"
    )
    chunks = first.find_elements(By.CSS_SELECTOR, ".passage .chunk")
    assert len(chunks) >= 2 and button.get_attribute("aria-expanded") == "true"
    assert "P-101" in first.find_element(By.CSS_SELECTOR, ".passage .chunk.hit").text
    # the filters: path contains, file type (the kinds the index holds), a metadata key
    from selenium.webdriver.support.ui import Select

    browser.find_element(By.CSS_SELECTOR, "#filters summary").click()
    browser.find_element(By.ID, "f-path").send_keys("evil")
    Select(browser.find_element(By.ID, "f-kind")).select_by_visible_text("txt")
    _search_in_page(browser, "reset pump P-101")
    paths = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .path")]
    assert paths and all(p.endswith("evil.txt") for p in paths), paths
    browser.find_element(By.ID, "f-path").clear()
    browser.find_element(By.ID, "f-key").send_keys("kind")
    browser.find_element(By.ID, "f-value").send_keys("pdf")
    _search_in_page(browser, "reset pump P-101")
    assert _text(browser, "#search-note").startswith("0 results")
    # every request went to this server; the console has no errors (a CSP refusal would be one)
    urls = _requests(browser)
    assert urls and all(u.startswith(server.url + "/") for u in urls), urls
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def agent_docs(server: Server) -> Path:
    status = httpx.get(f"{server.url}/v1/page/status", timeout=TIMEOUT).json()
    return Path(status["agent"]["roots"][0]["path"])


def test_browser_shows_index_text_as_text(browser: Any, server: Server) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    _fresh(browser, server.url)
    _until(browser, lambda d: "indexed" in _text(d, "#facts"), "the status")
    _search_in_page(browser, "compressor notes script alert img onerror")
    texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .text")]
    evil = next((t for t in texts if "Compressor notes" in t), None)
    assert evil is not None, texts
    assert "<script>alert(1)</script>" in evil and "<img src=x onerror=alert(2)>" in evil
    # open it in context too: the neighbours' path builds the DOM the same way
    for i, b in enumerate(browser.find_elements(By.CSS_SELECTOR, "#results button.context")):
        b.click()  # one at a time: an opening passage moves the buttons below it
        _until(browser, lambda d, b=b: b.get_attribute("aria-expanded") == "true", f"passage {i}")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".passage")) == len(texts)
    assert browser.find_elements(By.CSS_SELECTOR, "#results img, #results script") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # the page's own
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is the check
    urls = _requests(browser)
    assert not [u for u in urls if u.rstrip("/").endswith("/x")], urls
    assert all(u.startswith(server.url + "/") for u in urls), urls
    # the status refreshes itself (every 10 s), the results stay
    before = _text(browser, "#updated")
    _until(browser, lambda d: _text(d, "#updated") != before, "a refreshed status")
    assert "/v1/page/status" in " ".join(_requests(browser))
    assert "Compressor notes" in _text(browser, "#results")


def test_browser_asks_for_the_key_beyond_loopback(
    browser: Any, keyed: Server, api_key: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _fresh(browser, keyed.url)
    _until(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), "the key prompt")
    assert not browser.find_element(By.ID, "search").is_displayed()
    assert browser.switch_to.active_element == browser.find_element(By.ID, "key")
    browser.find_element(By.ID, "key").send_keys("not-the-key", Keys.ENTER)
    _until(browser, lambda d: "not the key" in _text(d, "#login-error"), "the refusal")
    assert browser.get_cookies() == []
    browser.find_element(By.ID, "key").send_keys(api_key, Keys.ENTER)
    _until(browser, lambda d: "2 indexed" in _text(d, "#facts"), "the status after the key")
    assert not browser.find_element(By.ID, "login").is_displayed()
    (cookie,) = browser.get_cookies()
    assert cookie["name"] == COOKIE and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert api_key not in cookie["value"]
    # searching (a POST) works on the cookie and the page's CSRF token
    _search_in_page(browser, "reset pump P-101")
    assert "P-101" in _text(browser, "#results .text")
    # asked once: a reload keeps the session
    browser.get(keyed.url)
    _until(browser, lambda d: "2 indexed" in _text(d, "#facts"), "the status after a reload")
    assert not browser.find_element(By.ID, "login").is_displayed()
    browser.find_element(By.ID, "logout").click()
    _until(browser, lambda d: d.find_element(By.ID, "login").is_displayed(), "asked again")


def test_browser_phone_width_and_dark_mode(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        _fresh(browser, server.url)
        _until(browser, lambda d: "indexed" in _text(d, "#facts"), "the status")
        _search_in_page(browser, "reset pump P-101")
        # nothing wider than the phone: no sideways scrolling
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, width
        assert browser.find_element(By.ID, "q").size["width"] > 150
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "page-phone.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        browser.execute_script("document.getElementById('status').scrollIntoView()")
        browser.save_screenshot(str(ARTIFACTS / "page-phone-status.png"))
        print(f"phone-width screenshots: {ARTIFACTS}/page-phone*.png")
        light = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        browser.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        dark = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert light != dark and _luminance(dark) < 0.2 < _luminance(light), (light, dark)
        browser.save_screenshot(str(ARTIFACTS / "page-phone-dark.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def _luminance(css_rgb: str) -> float:
    r, g, b = (int(v) for v in re.findall(r"\d+", css_rgb)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
