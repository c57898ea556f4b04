"""A small client of a Ray cluster's dashboard REST API: the Jobs API and the two State API calls ``ray`` uses.

Only what :mod:`deepforge_adapters.compute.ray` needs, over the one session factory (:mod:`..http`):

* ``GET /api/version``; ``GET``/``PUT /api/packages/gcs/<name>`` (the job's working directory, a zip);
* ``POST /api/jobs/`` (submit), ``GET /api/jobs/<id>`` (status), ``POST /api/jobs/<id>/stop``,
  ``DELETE /api/jobs/<id>``;
* ``GET /api/v0/logs/file?node_id=..&filename=job-driver-<id>.log&lines=-1``: the job's log as raw bytes,
  streamed.  Ray's ``GET /api/jobs/<id>/logs`` reads the log as strict UTF-8 into one JSON string: it answers
  HTTP 500 while a job has written half of a multi-byte character (or any byte that is not UTF-8), and holds
  the whole log in one string; the State API's log stream has neither problem.
* ``GET /api/v0/nodes``: the nodes and their total resources (is a request satisfiable at all?).

Every failure is a :class:`~deepforge_adapters.errors.ComputeError` that names the dashboard URL and says
what went wrong in words: unreachable, TLS verification, refused (401/403: the token or headers), or Ray's own
message (the last line of its traceback).  No secret (token, header value) is ever part of a message.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from ..errors import ComputeError
from ..http import describe_connection_error, make_session

log = logging.getLogger(__name__)

#: Ray's 500s are definite answers (a duplicate submission id, a bad request it did not classify); only
#: gateway errors are worth another try.
RETRY_STATUSES = (502, 503, 504)
RETRIES = 3
#: Where Ray writes a submitted job's driver log, relative to the node's log directory.
DRIVER_LOG = "job-driver-{submission_id}.log"
STREAM_CHUNK = 64 * 1024


def ray_message(response: requests.Response, limit: int = 400) -> str:
    """Ray's words for a failed request: the last non-empty line of its body (Ray answers with a traceback
    whose last line is the exception), or the HTTP status."""
    try:
        text = response.text
    except Exception:  # pragma: no cover - an undecodable body
        text = ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    detail = lines[-1][:limit] if lines else ""
    status = f"HTTP {response.status_code}"
    return f"{status}: {detail}" if detail else status


class RayJobsAPI:
    """The dashboard at ``url``; ``headers`` (with the bearer token, if any) go with every request."""

    def __init__(
        self,
        backend: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        verify: bool | str = True,
        timeout: float | tuple[float, float] = (10.0, 60.0),
    ) -> None:
        self.backend = backend
        self.url = url.rstrip("/")
        self.session = make_session(headers=headers, timeout=timeout, retries=RETRIES, retry_statuses=RETRY_STATUSES)
        #: Passed with every request: requests lets $REQUESTS_CA_BUNDLE override a session's ``verify``.
        self.verify = verify

    # ------------------------------------------------------------------------------------ plumbing
    def request(
        self, method: str, path: str, what: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> requests.Response:
        """One call; a status outside ``ok`` (and not 404 when 404 is in ``ok``) is a :class:`ComputeError`."""
        try:
            # no redirects: requests keeps custom headers (an API key) when a redirect goes to another host
            response = self.session.request(
                method, self.url + path, verify=self.verify, allow_redirects=False, **kwargs
            )
        except requests.exceptions.SSLError as exc:
            raise ComputeError(
                self.backend,
                f"{what}: TLS verification of the Ray dashboard at {self.url} failed "
                f"({describe_connection_error(exc)}); set caBundle to the CA that signed its certificate",
            ) from None
        except requests.RequestException as exc:
            raise ComputeError(
                self.backend, f"{what}: cannot reach the Ray dashboard at {self.url}: {describe_connection_error(exc)}"
            ) from None
        if response.status_code in ok:
            return response
        if response.status_code in (401, 403, 407):
            raise ComputeError(
                self.backend,
                f"{what}: the Ray dashboard at {self.url} refused the request (HTTP {response.status_code}); "
                "check the token and headers of the ray compute config",
            )
        raise ComputeError(self.backend, f"{what}: the Ray dashboard at {self.url} answered {ray_message(response)}")

    def _json(self, response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ComputeError(
                self.backend,
                f"{what}: the Ray dashboard at {self.url} answered HTTP {response.status_code} with a body that is "
                "not JSON (is dashboardUrl the Ray dashboard?)",
            ) from None

    # ------------------------------------------------------------------------------------ calls
    def version(self) -> dict[str, Any]:
        value = self._json(self.request("GET", "/api/version", "version"), "version")
        if not isinstance(value, dict) or "ray_version" not in value:
            raise ComputeError(self.backend, f"{self.url} does not look like a Ray dashboard (GET /api/version)")
        return value

    def package_exists(self, name: str) -> bool:
        """Whether ``gcs://<name>`` is stored (asking also pins it for a while, as Ray's own client does)."""
        response = self.request("GET", f"/api/packages/gcs/{quote(name)}", f"look up package {name}", ok=(200, 404))
        return response.status_code == 200

    def upload_package(self, name: str, path: Path) -> None:
        with open(path, "rb") as body:
            self.request("PUT", f"/api/packages/gcs/{quote(name)}", f"upload package {name}", data=body)

    def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        what = f"submit job {body.get('submission_id')}"
        value = self._json(self.request("POST", "/api/jobs/", what, json=dict(body)), what)
        return dict(value) if isinstance(value, dict) else {}

    def job(self, submission_id: str) -> dict[str, Any] | None:
        """The job's details, None when Ray does not know it."""
        what = f"get job {submission_id}"
        response = self.request("GET", f"/api/jobs/{quote(submission_id)}", what, ok=(200, 404))
        if response.status_code == 404:
            return None
        value = self._json(response, what)
        if not isinstance(value, dict):
            raise ComputeError(self.backend, f"{what}: the Ray dashboard answered with a JSON {type(value).__name__}")
        return value

    def stop(self, submission_id: str) -> bool:
        what = f"stop job {submission_id}"
        value = self._json(self.request("POST", f"/api/jobs/{quote(submission_id)}/stop", what), what)
        return bool(isinstance(value, dict) and value.get("stopped"))

    def delete(self, submission_id: str) -> bool:
        what = f"delete job {submission_id}"
        response = self.request("DELETE", f"/api/jobs/{quote(submission_id)}", what, ok=(200, 404))
        if response.status_code == 404:
            return False
        value = self._json(response, what)
        return bool(isinstance(value, dict) and value.get("deleted"))

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's alive nodes (``node_id``, ``resources_total``)."""
        what = "list nodes"
        value = self._json(self.request("GET", "/api/v0/nodes", what, params={"limit": 10000}), what)
        try:
            found = value["data"]["result"]["result"]
        except (KeyError, TypeError):
            raise ComputeError(self.backend, f"{what}: unexpected answer from the Ray State API") from None
        return [n for n in found if isinstance(n, dict) and n.get("state") == "ALIVE"]

    @contextlib.contextmanager
    def driver_log(self, node_id: str, submission_id: str) -> Iterator[Iterator[bytes]]:
        """The job's driver log from its start, as raw byte chunks read while they arrive (closed on exit)."""
        what = f"read the log of job {submission_id}"
        params = {"node_id": node_id, "filename": DRIVER_LOG.format(submission_id=submission_id), "lines": -1}
        response = self.request("GET", "/api/v0/logs/file", what, params=params, stream=True)
        try:
            yield response.iter_content(STREAM_CHUNK)
        finally:
            response.close()
