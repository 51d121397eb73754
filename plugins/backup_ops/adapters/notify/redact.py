"""Keep webhook URLs and tokens out of what a failed delivery logs.

A Slack webhook URL is its own credential (the token is its path), and an HTTP client's error
names the URL it could not reach (``… Max retries exceeded with url: /hooks/T0/B0/secret``).
So the reason logged for a channel that failed keeps a URL's scheme and host, never its path or
query, and never a value the channel's settings call secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_URL_RE = re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s'\"?#]+)[^\s'\")]*", re.IGNORECASE)
_URL_PATH_RE = re.compile(r"(\burl: ?)(/[^\s'\")]*)", re.IGNORECASE)
MAX_REASON = 300


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every URL cut to scheme://host/… and every non-empty ``secrets`` value replaced by ***."""
    for secret in sorted((s for s in secrets if s and len(s) > 3), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_RE.sub(lambda m: m.group(1) + ("/…" if len(m.group(0)) > len(m.group(1)) else ""), text)
    return _URL_PATH_RE.sub(r"\1/…", text)


def reason(exc: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """One redacted line for a delivery error: its type and message, at most MAX_REASON characters."""
    text = " ".join(str(exc).split()).rstrip(".") or "no message"
    text = redact(f"{type(exc).__name__}: {text}", secrets)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


class RedactingLog:
    """Stands in for a provider hook's logger so that every line it logs goes through ``redact`` first.

    The HTTP provider logs the URL it could not reach (``… with url: /hooks/…``) on its own logger,
    outside our control; Airflow's secrets masker only knows values registered as secrets, and a
    webhook path is not one. Tracebacks (``exc_info``) are dropped: they would repeat the URL.
    """

    def __init__(self, log: Any, secrets: Iterable[str | None] = ()) -> None:
        self._log = log
        self._secrets = list(secrets)

    def _emit(self, level: str, msg: object, *args: object, **_: object) -> None:
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(str(part) for part in (msg, *args))
        getattr(self._log, level)("%s", redact(text, self._secrets))

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        self._emit("debug", msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        self._emit("info", msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: object) -> None:
        self._emit("warning", msg, *args, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: object) -> None:
        self._emit("error", msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: object) -> None:
        self._emit("error", msg, *args, **kwargs)

    def critical(self, msg: object, *args: object, **kwargs: object) -> None:
        self._emit("critical", msg, *args, **kwargs)
