"""Keeping credentials out of names, logs and messages.

Stream URLs carry credentials (``rtsp://admin:secret@cam/...``) and the web view takes ``?token=``. Neither may
reach a log line, an error message, an MQTT topic or the event index:

* :func:`redact` replaces URL user info with ``***@`` and the value of secret-looking query parameters
  (``token``, ``password``, ...) with ``***``;
* :func:`camera_name_from_url` derives a stable camera name from host, port and path only;
* :class:`RedactingFilter` applies :func:`redact` to every record a logging handler emits (message,
  arguments and traceback text).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

# scheme://user[:password]@ -- user info ends at the last '@' before the first '/', '?' or '#' of the authority
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#\s@]*(?:@[^/?#\s@]*)*)@")
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;](?:token|access_token|password|passwd|pwd|pass|secret|key|api_key|apikey|auth)=)[^&#\s]*",
    re.IGNORECASE,
)
MASK = "***"


def redact(text: str) -> str:
    """``text`` with URL credentials and secret query parameters masked."""
    if "@" in text:
        text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    if "=" in text:
        text = _SECRET_PARAM.sub(lambda m: f"{m.group('key')}{MASK}", text)
    return text


def camera_name_from_url(url: str) -> str:
    """A camera name for a stream URL: host, port and path, never user info or query (``cam.lan_554_live``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        host, port, parts = "", None, urlsplit("")
    raw = "_".join(p for p in (host.replace(":", "-"), str(port) if port else "", parts.path.strip("/")) if p)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("_.")
    return name[:64] or "stream"


class RedactingFilter(logging.Filter):
    """A handler filter that masks credentials in the formatted message and in traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (the root logger by default), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
