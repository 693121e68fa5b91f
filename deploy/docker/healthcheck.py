#!/usr/bin/env python3
"""Container health check: exit 0 when an HTTP URL answers 2xx within a few seconds.

The slim image has no curl; this is the image's HEALTHCHECK and the compose file's probe
for every Python service. Usage: ``smartcloudops-healthcheck [URL]`` (default: the
``HEALTHCHECK_URL`` environment variable, else the scoring service's /healthz).
"""

from __future__ import annotations

import http.client
import os
import sys
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8080/healthz"
TIMEOUT_SECONDS = 4.0


def check(url: str) -> tuple[bool, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False, f"not an http:// URL: {url!r}"
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=TIMEOUT_SECONDS)
    try:
        conn.request("GET", parts.path or "/")
        status = conn.getresponse().status
    except OSError as exc:  # refused, reset, timed out
        return False, f"{url}: {exc}"
    finally:
        conn.close()
    return 200 <= status < 300, f"{url}: HTTP {status}"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else os.environ.get("HEALTHCHECK_URL", DEFAULT_URL)
    ok, message = check(url)
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
