"""A real headless Chromium (Debian's ``chromium``) over its DevTools pipe: load a page, read its DOM, screenshot it.

``chromium --headless --dump-dom URL`` and ``--screenshot`` cannot log in: the backup-ops page
needs Airflow's session cookie. So the browser is started with the same flags (``--headless
--no-sandbox --disable-gpu``) plus ``--remote-debugging-pipe``, and spoken to in the Chrome
DevTools Protocol over file descriptors 3 and 4 (JSON messages ending in a NUL byte): set the
cookie, navigate, wait until a JavaScript condition holds, then read the DOM or capture a PNG.
No library beyond the standard one, nothing listening on a port, a throwaway profile.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--mute-audio")


class BrowserError(RuntimeError):
    """The browser could not be started, answered with an error, or a page did not get ready in time."""


def chromium_binary() -> str | None:
    """The Chromium executable on PATH (Debian's ``chromium``, or another distribution's name), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


class HeadlessChromium:
    """One headless Chromium with one page; use it as a context manager (it is closed, by PID, on exit)."""

    def __init__(self, *, width: int = 1400, height: int = 900, binary: str | None = None) -> None:
        self.width, self.height = width, height
        found = binary or chromium_binary()
        if found is None:
            raise BrowserError("Chromium is not installed (Debian: apt-get install chromium; `make test` does it).")
        self.binary: str = found
        self._profile = Path(tempfile.mkdtemp(prefix="backup-ops-chromium-"))
        self._ids = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._session = ""

    def __enter__(self) -> HeadlessChromium:
        to_browser, from_us = os.pipe()      # we write, the browser reads on fd 3
        from_browser, to_us = os.pipe()      # the browser writes on fd 4, we read

        def give_fds() -> None:  # in the child, before exec: the pipe ends become fds 3 and 4
            read_end, write_end = os.dup(to_browser), os.dup(to_us)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self._process = subprocess.Popen(
            [self.binary, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            preexec_fn=give_fds, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        os.close(to_browser)
        os.close(to_us)
        self._out, self._in = from_us, from_browser
        try:
            targets = self.call("Target.getTargets")["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self._session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                self.call(f"{domain}.enable", session=True)
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width, height=self.height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # -- the protocol

    def call(self, method: str, *, session: bool = False, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept for ``wait_event``."""
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for received in self._receive(deadline, method):
                if received.get("id") == self._ids:
                    if "error" in received:
                        raise BrowserError(f"{method} failed: {received['error'].get('message')}")
                    return dict(received.get("result", {}))
                self._events.append(received)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        """The next event ``method`` of the page (one that already arrived counts)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self._events):
                if event.get("method") == method:
                    return dict(self._events.pop(index).get("params", {}))
            self._events.extend(self._receive(deadline, method))

    def _receive(self, deadline: float, waiting_for: str) -> list[dict[str, Any]]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrowserError(f"Chromium did not answer {waiting_for} in time.")
        ready, _, _ = select.select([self._in], [], [], remaining)
        if not ready:
            raise BrowserError(f"Chromium did not answer {waiting_for} in time.")
        chunk = os.read(self._in, 1 << 20)
        if not chunk:
            raise BrowserError(f"Chromium exited while waiting for {waiting_for}.")
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\0")
        return [json.loads(raw) for raw in complete if raw]

    # -- what tests and scripts use

    def set_cookie(self, url: str, name: str, value: str) -> None:
        """A cookie for ``url``'s origin, as a login would leave it."""
        self.call("Network.setCookie", session=True, url=url, name=name, value=value, path="/")

    def open(self, url: str, *, ready: str = "document.readyState === 'complete'", timeout: float = 60) -> None:
        """Navigate to ``url`` and wait until the JavaScript expression ``ready`` is true in the page."""
        answer = self.call("Page.navigate", session=True, url=url)
        if answer.get("errorText"):
            raise BrowserError(f"Loading {url} failed: {answer['errorText']}.")
        deadline = time.monotonic() + timeout
        while not self.evaluate(ready):
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} was not ready within {timeout} s ({ready}).")
            time.sleep(0.2)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (exceptions count as None)."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            return None
        return result.get("result", {}).get("value")

    def dom(self) -> str:
        """The page's DOM as HTML, as ``--dump-dom`` prints it."""
        return str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: Path) -> Path:
        """A PNG of the viewport (``width`` × ``height``), as ``--screenshot`` writes it."""
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the browser (and, by PID, anything of it still running); remove the profile."""
        process, self._process = self._process, None
        if process is not None:
            family = []
            with contextlib.suppress(psutil.Error):
                family = psutil.Process(process.pid).children(recursive=True)
            with contextlib.suppress(BrowserError, OSError):
                self.call("Browser.close", timeout=5)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            for child in family:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            psutil.wait_procs([c for c in family if c.is_running()], timeout=5)
            for fd in (self._out, self._in):
                with contextlib.suppress(OSError):
                    os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)
