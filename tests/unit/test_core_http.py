"""http.make_session: retries 5xx and connection errors with backoff, never 4xx; timeouts; headers."""

from __future__ import annotations

import pytest
import requests
import responses
from deepforge_adapters.http import DEFAULT_TIMEOUT, describe_response, make_session

URL = "http://storage.invalid/blob"


@responses.activate
def test_5xx_is_retried_until_success() -> None:
    responses.add(responses.GET, URL, status=503)
    responses.add(responses.GET, URL, status=502)
    responses.add(responses.GET, URL, status=200, body="ok")
    resp = make_session(backoff=0).get(URL)
    assert resp.status_code == 200
    assert resp.text == "ok"
    assert len(responses.calls) == 3


@responses.activate
def test_5xx_gives_up_after_the_retries_and_returns_the_last_answer() -> None:
    responses.add(responses.GET, URL, status=500)
    resp = make_session(retries=2, backoff=0).get(URL)
    assert resp.status_code == 500
    assert len(responses.calls) == 3  # first try + 2 retries


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
@responses.activate
def test_4xx_is_never_retried(status: int) -> None:
    responses.add(responses.GET, URL, status=status)
    resp = make_session(backoff=0).get(URL)
    assert resp.status_code == status
    assert len(responses.calls) == 1


@responses.activate
def test_post_is_not_retried_unless_allowed() -> None:
    responses.add(responses.POST, URL, status=503)
    responses.add(responses.POST, URL, status=200)
    assert make_session(backoff=0).post(URL, data=b"x").status_code == 503
    assert len(responses.calls) == 1
    assert make_session(backoff=0, retry_methods={"post"}).post(URL, data=b"x").status_code == 200


def test_default_timeout_and_headers() -> None:
    session = make_session(headers={"Authorization": "Bearer t", "X-Empty": ""})
    assert session.timeout == DEFAULT_TIMEOUT
    assert session.headers["Authorization"] == "Bearer t"
    assert "X-Empty" not in session.headers  # empty auth values are not sent as empty headers


@responses.activate
def test_timeout_is_passed_unless_the_call_names_its_own() -> None:
    seen: list[object] = []

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        return (200, {}, "")

    responses.add_callback(responses.GET, URL, callback=callback)
    session = make_session(timeout=3.0)
    original = requests.adapters.HTTPAdapter.send

    def spy(self: requests.adapters.HTTPAdapter, request: requests.PreparedRequest, **kwargs: object) -> object:
        seen.append(kwargs.get("timeout"))
        return original(self, request, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(requests.adapters.HTTPAdapter, "send", spy)
        session.get(URL)
        session.get(URL, timeout=9)
    assert seen == [3.0, 9]


@responses.activate
def test_describe_response_truncates_the_body() -> None:
    responses.add(responses.GET, URL, status=404, body="x" * 1000)
    text = describe_response(requests.get(URL), limit=10)
    assert text == "HTTP 404 Not Found: xxxxxxxxxx"
    responses.add(responses.GET, URL + "/empty", status=500, body="")
    assert describe_response(requests.get(URL + "/empty")) == "HTTP 500 Internal Server Error"


def test_file_bodies_are_sent_in_large_blocks() -> None:
    """urllib3 reads a file-like body 16 KiB at a time by default: 65,536 reads and sends per GiB (issue 14)."""
    import http.server
    import io
    import threading

    from deepforge_adapters.http import SEND_BLOCK

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            left = int(self.headers["Content-Length"])
            while left:
                left -= len(self.rfile.read(min(left, 1 << 20)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Body(io.BytesIO):
        asked: list[int] = []

        def read(self, size: int | None = -1) -> bytes:
            self.asked.append(-1 if size is None else size)
            return super().read(size)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        body = Body(b"x" * (3 * SEND_BLOCK + 5))
        response = make_session().put(f"http://127.0.0.1:{server.server_port}/f", data=body)
        assert response.status_code == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert max(body.asked) == SEND_BLOCK
