"""Headless Chromium for the report tests, driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: commands in on fd 3, answers out on fd 4, each a JSON message ended by a NUL
byte), so nothing listens on a port and no websocket client is needed. No network: the page is a file.

Debian's ``chromium`` package; ``.ci/run`` (scripts/test.sh) installs it where missing, and the tests skip
with the reason only where none can be had.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in (os.environ.get("REALFILL_CHROMIUM"), *CANDIDATES):
        if name and (path := shutil.which(name)):
            return path
    return None


class Chromium:
    """One headless browser with one page: ``open(file)``, ``evaluate(js)``, ``screenshot(path)``."""

    def __init__(self, executable: str, width: int = 1280, height: int = 1600, timeout: float = 30.0):
        self.timeout = timeout
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="realfill-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        high_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        high_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)

        def on_fds_3_and_4():  # in the child, before exec
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-sync", "--mute-audio", "--hide-scrollbars",
             "--allow-file-access-from-files", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=on_fds_3_and_4, pass_fds=(3, 4, high_in, high_out),
        )
        for fd in (to_browser_r, from_browser_w, high_in, high_out):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    # -- the protocol --------------------------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def call(self, method: str, params: dict | None = None) -> dict:
        return self._call(method, params, self.session)

    def _wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    # -- what the tests use --------------------------------------------------------------------------

    def open(self, path: Path) -> None:
        """Load the file and wait for its load event (every <img> then has loaded or failed)."""
        self.events.clear()
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()})
        self._wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page (the whole page, however long, with ``full_page``)."""
        params = {"format": "png"}
        if full_page:
            width = self.evaluate("document.documentElement.scrollWidth")
            height = self.evaluate("document.documentElement.scrollHeight")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": max(width, self.width),
                                                           "height": min(height, 16000), "scale": 1})
        data = self.call("Page.captureScreenshot", params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self._call("Browser.close")
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


#: every <img> of the page: its src, whether it finished loading, its natural size
IMAGES_JS = ("Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete, "
             "width: i.naturalWidth, height: i.naturalHeight}))")


def column_js(table_id: str, column: int) -> str:
    """The cells of ``column`` in ``table_id``'s body, in their current order (their sort values)."""
    return (f"Array.from(document.getElementById('{table_id}').tBodies[0].rows).map(r => "
            f"r.cells[{column}].getAttribute('data-sort') ?? r.cells[{column}].textContent.trim())")


def click_header_js(table_id: str, column: int) -> str:
    return f"document.getElementById('{table_id}').tHead.rows[0].cells[{column}].click(); true"
