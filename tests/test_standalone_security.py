"""The standalone UI answers only its own page (issue 15, item 8): no open CORS, a foreign Host (DNS rebinding) or
Origin (any web page) is refused with 403, against the real `python -m trainer ui` on a free loopback port."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-security")
    (tmp / "models").mkdir()
    (tmp / "models" / "secret-model.safetensors").write_bytes(b"")
    port = free_port()
    log_path = tmp / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainer", "ui", "--port", str(port), "--models-dir", str(tmp / "models"),
             "--output-dir", str(tmp / "out"), "--data-dir", str(tmp / "data")],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 120
        while True:
            if process.poll() is not None:
                raise AssertionError(log_path.read_text())
            try:
                if request(port, "GET", "/")[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError("the UI did not start within 120 s:\n" + log_path.read_text())
            time.sleep(0.5)
        yield port, log_path
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def request(port, method, path, headers=None, body=None):
    """(status, lower-cased headers, body) of one request; Host is 127.0.0.1:<port> unless `headers` says."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
            headers["Content-Length"] = str(len(body))
        for key, value in headers.items():
            if value is not None:
                conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_same_origin_requests_work(server):
    port, _ = server
    status, headers, body = request(port, "GET", "/")
    assert status == 200 and b"<html" in body.lower()
    assert "access-control-allow-origin" not in headers
    status, headers, body = request(port, "GET", "/config", {"Origin": f"http://127.0.0.1:{port}"})
    assert status == 200 and "components" in json.loads(body)
    status, _, _ = request(port, "GET", "/config", {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}",
                                                    "Sec-Fetch-Site": "same-origin"})
    assert status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "127.0.0.1", "",
                                  "localhost.evil.example:{port}"])
def test_a_foreign_host_header_is_refused(server, host):
    port, _ = server
    status, _, body = request(port, "GET", "/", {"Host": host.format(port=port)})
    assert status == 403 and b"<html" not in body.lower()
    status, _, body = request(port, "GET", "/config", {"Host": host.format(port=port)})
    assert status == 403 and b"secret-model" not in body


def test_no_host_header_is_refused(server):
    port, _ = server
    assert request(port, "GET", "/config", {"Host": None})[0] in (400, 403)  # HTTP/1.1 server refuses it too


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1:{port}",
                                    "http://localhost.evil.example:{port}"])
def test_a_cross_origin_post_is_refused_without_cors_headers(server, origin):
    port, log_path = server
    body = json.dumps({"data": [], "fn_index": 0, "session_hash": "x"}).encode()
    for path in ("/run/predict", "/api/predict", "/queue/join"):
        status, headers, answer = request(port, "POST", path, {"Origin": origin.format(port=port)}, body)
        assert status == 403, (path, status, answer)
        assert headers.get("access-control-allow-origin") is None
    # the CORS preflight a browser sends first is refused too, and grants nothing
    status, headers, _ = request(port, "OPTIONS", "/run/predict", {
        "Origin": origin.format(port=port), "Access-Control-Request-Method": "POST"})
    assert status == 403 and "access-control-allow-origin" not in headers
    assert "refused" in log_path.read_text()


def test_config_is_not_readable_cross_origin(server):
    port, _ = server
    status, headers, body = request(port, "GET", "/config", {"Origin": "http://evil.example"})
    assert status == 403 and b"secret-model" not in body and "access-control-allow-origin" not in headers
    status, _, body = request(port, "GET", "/config", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})
    assert status == 403 and b"secret-model" not in body


def test_a_link_from_elsewhere_still_opens_the_page(server):
    port, _ = server
    status, _, body = request(port, "GET", "/", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert status == 200 and b"<html" in body.lower()


def test_a_cross_origin_websocket_is_refused(server):
    port, _ = server
    status, _, _ = request(port, "GET", "/queue/join", {
        "Origin": "http://evil.example", "Connection": "Upgrade", "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert status == 403
