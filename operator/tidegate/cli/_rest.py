"""A small JSON client of the Kubernetes API on urllib3 (the transport the kubernetes client uses).

The CLI needs a handful of calls — get, list, merge/JSON patch, watch — and must start
fast; the generated `kubernetes` client costs 0.4-0.9 s to import (`bench/cli_startup.py`).
Requests and responses are plain dicts, as the API sends them.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from tidegate import __version__

if TYPE_CHECKING:
    import ssl

    import urllib3

    from tidegate.cli._kubeconfig import Credentials

USER_AGENT = f"tidegate-cli/{__version__}"
CONNECT_TIMEOUT_SECONDS = 30.0


class ApiError(Exception):
    """The API server answered with an error status; `message` is its own words."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message or f"{status} {reason}".strip()


class Unreachable(Exception):
    """No answer from the API server (connection refused, TLS failure, timeout)."""


def _ssl_context(creds: Credentials) -> ssl.SSLContext:
    import ssl
    import tempfile

    if creds.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=creds.ca_file, cadata=creds.ca_data)
    if creds.cert_file and creds.key_file:
        ctx.load_cert_chain(creds.cert_file, creds.key_file)
    elif creds.cert_data and creds.key_data:
        # ssl reads certificates from files only: write them where only we can read, load, remove.
        with tempfile.TemporaryDirectory(prefix="tidegate-") as tmp:
            cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
            for path, data in ((cert, creds.cert_data), (key, creds.key_data)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            ctx.load_cert_chain(cert, key)
    return ctx


def path_for(
    group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None
) -> str:
    """`/api/v1/namespaces/ns/pods` or `/apis/group/version/...`; namespace None: cluster-wide."""
    root = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    parts = [root]
    if namespace is not None:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(plural)
    if name is not None:
        parts.append(quote(name, safe=""))
    return "/".join(parts)


class Api:
    """Requests to one API server with one set of credentials; safe to share between threads."""

    def __init__(self, creds: Credentials, request_timeout: float | None = None) -> None:
        import urllib3  # here, not at the top: `tidegate --help` never loads it

        self.creds = creds
        self.request_timeout = request_timeout
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        elif creds.username is not None:
            headers.update(urllib3.make_headers(basic_auth=f"{creds.username}:{creds.password or ''}"))
        self._headers = headers
        kwargs: dict[str, Any] = {"maxsize": 8, "retries": False}
        if creds.server.startswith("https"):
            try:
                kwargs["ssl_context"] = _ssl_context(creds)
            except OSError as exc:  # ssl.SSLError is an OSError
                raise Unreachable(f"TLS setup: {exc}") from exc
            if creds.tls_server_name:
                kwargs["server_hostname"] = creds.tls_server_name
            if creds.insecure:
                kwargs["cert_reqs"] = "CERT_NONE"
                kwargs["assert_hostname"] = False
        self._pool = urllib3.PoolManager(**kwargs)
        self._lock = threading.Lock()
        self._streams: list[Any] = []

    def _timeout(self, streaming: bool) -> urllib3.Timeout:
        import urllib3

        if self.request_timeout:
            # kubectl's --request-timeout bounds a single request; a watch is open-ended by design.
            if streaming:
                return urllib3.Timeout(connect=self.request_timeout, read=None)
            return urllib3.Timeout(total=self.request_timeout)
        return urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=None)

    def _url(self, path: str, params: dict[str, Any] | None) -> str:
        query = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        for k, v in query.items():
            if isinstance(v, bool):
                query[k] = "true" if v else "false"
        return self.creds.server + path + (f"?{urlencode(query)}" if query else "")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request; the decoded JSON answer. ApiError on an error status, Unreachable on no answer."""
        import urllib3

        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            response = self._pool.request(
                method,
                self._url(path, params),
                body=data,
                headers=headers,
                timeout=self._timeout(streaming=False),
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(_reason(exc)) from exc
        if response.status >= 400:
            raise _error(response.status, response.reason or "", response.data)
        return json.loads(response.data) if response.data else {}

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def stream(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """A watch: one decoded event per line until the server ends it (or `close_streams`)."""
        import urllib3

        try:
            response = self._pool.request(
                "GET",
                self._url(path, {**params, "watch": True}),
                headers=self._headers,
                timeout=self._timeout(streaming=True),
                preload_content=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(_reason(exc)) from exc
        if response.status >= 400:
            raise _error(response.status, response.reason or "", response.read())
        with self._lock:
            self._streams.append(response)
        try:
            pending = b""
            for chunk in response.stream(16 * 1024, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(_reason(exc)) from exc
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._streams.remove(response)
            response.release_conn()

    def close_streams(self) -> None:
        """End every open watch (from another thread): their iterators stop."""
        with self._lock:
            streams = list(self._streams)
        for response in streams:
            with contextlib.suppress(Exception):
                response.shutdown()


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)


def _error(status: int, reason: str, data: bytes) -> ApiError:
    message = ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        message = str(json.loads(data).get("message") or "")
    return ApiError(status, reason, message)
