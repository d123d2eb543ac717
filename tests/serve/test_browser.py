"""The page in a real browser: headless Chromium, driven through the DevTools protocol, loads the page from the
test's server, types a query, and the results it shows are the API's; a click plays the moment and shows its
attention map. A screenshot is saved (and copied to $EGOVLP_SCREENSHOT when that is set). Skips, saying why, where
no Chromium is installed (`.ci/run` installs the Debian package)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

websocket = pytest.importorskip("websocket", reason="websocket-client is needed to drive Chromium")

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
BROWSER = os.environ.get("EGOVLP_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
pytestmark = [
    pytest.mark.skipif(BROWSER is None, reason=f"no Chromium found ({', '.join(BROWSERS)}); `.ci/run` installs it"),
    pytest.mark.timeout(180),
]
QUERY = "C opens the drawer"


class DevTools:
    """A minimal DevTools-protocol client of one page: ``call(method, **params)`` waits for that call's result."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == n:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}; status: {self.js('document.body.innerText')!r}")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium with a DevTools port of its choosing; yields ``(process, devtools http base URL)``."""
    process = subprocess.Popen(
        [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port_file = tmp_path / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start: {process.stderr.read() if process.stderr else ''}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def open_page(devtools_url: str) -> DevTools:
    request = urllib.request.Request(devtools_url + "/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        target = json.loads(response.read())
    page = DevTools(target["webSocketDebuggerUrl"])
    page.call("Page.enable")
    page.call("Runtime.enable")
    return page


def test_search_in_a_real_browser(browser, server, searcher, tmp_path):
    page = open_page(browser)
    try:
        page.call("Page.navigate", url=server + "/")
        page.wait_for("document.readyState === 'complete' && document.getElementById('info').textContent.length > 0")
        assert "3 video(s)" in page.js("document.getElementById('info').textContent")
        page.js("document.getElementById('query').focus()")
        page.call("Input.insertText", text=QUERY)  # typed, as keystrokes would
        page.js("document.getElementById('top-k').value = '4'")
        for kind in ("keyDown", "keyUp"):  # Enter submits the form
            page.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                      text="\r" if kind == "keyDown" else "")  # fmt: skip
        page.wait_for("document.querySelectorAll('#results .result').length > 0")
        page.wait_for("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
        shown = page.js("[...document.querySelectorAll('#results .result')].map(r => r.innerText)")
        want = searcher.search(QUERY, top_k=4)
        assert len(shown) == len(want) > 0
        for text, moment in zip(shown, want, strict=True):
            assert moment.video in text and f"score {moment.score:.3f}" in text
            assert re.search(rf"^{moment.rank}\. \d+:\d\d\.\d - \d+:\d\d\.\d", text), text
        assert page.js("document.getElementById('status').textContent").startswith(f'{len(want)} moment(s) for "')

        # play a moment of a file video: the player gets its media and plays within the moment; its attention map
        f = next(i for i, m in enumerate(want) if m.kind == "file")
        number = [v.id for v in searcher.index.videos].index(want[f].video)
        page.js(f"document.querySelectorAll('#results .result')[{f}].click()")
        assert page.js("document.getElementById('player').getAttribute('src')") == f"/api/media/{number}"
        page.wait_for("document.getElementById('player').readyState >= 1")
        page.wait_for(
            "!document.getElementById('attention').hidden && document.getElementById('attention').naturalWidth > 0"
        )
        page.wait_for("document.getElementById('player').currentTime > 0")
        now = page.js("document.getElementById('player').currentTime")
        assert want[f].start - 0.2 <= now <= want[f].end + 0.5
        assert page.js("document.getElementById('now-playing').textContent").startswith(want[f].video)

        shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])

        # a moment of the chunked video (2 s chunks) that spans two chunks plays on into the second one
        k = next(i for i, m in enumerate(want) if m.kind == "chunked")
        assert want[k].start < 2.0 < want[k].end, "the fixture's chunked moment should span both chunks"
        page.js(f"document.querySelectorAll('#results .result')[{k}].click()")
        page.js("document.getElementById('player').playbackRate = 4")
        page.wait_for("document.getElementById('player').getAttribute('src').endsWith('/1')", timeout=30)
        page.wait_for("document.getElementById('player').currentTime > 0", timeout=30)
    finally:
        page.close()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    (tmp_path / "serve_screenshot.png").write_bytes(shot)
    if os.environ.get("EGOVLP_SCREENSHOT"):  # a copy where asked (the README's picture)
        Path(os.environ["EGOVLP_SCREENSHOT"]).write_bytes(shot)
