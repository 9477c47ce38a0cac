"""A running server's Prometheus metrics as a test reads them: GET /metrics over HTTP, as text or
with each sample line as ``{'name{labels}': value}``."""

from __future__ import annotations

import http.client


def metrics_text(http_url: str) -> str:
    host, port = http_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def parse(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def scrape(http_url: str) -> dict[str, float]:
    return parse(metrics_text(http_url))
