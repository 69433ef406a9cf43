"""Argo Rollouts' own authentication blocks: `basicAuth` and `oauth2` with their values in the
template (usually `{{args.NAME}}` of an argument whose valueFrom is a secretKeyRef, which the
controller reads at measurement time), and the custom `headers` of a Prometheus provider.

As Argo's `NewPrometheusAPI`: basicAuth needs both username and password; oauth2 needs
tokenUrl, clientId and clientSecret and fetches a token by the client-credentials grant
(client id and secret in a basic Authorization header, as Go's `clientcredentials` first tries;
`scope` space-separated) at each measurement, sent as `Authorization: Bearer`. Every value
read this way is scrubbed from what a measurement reports.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

from tidegate.api.analysis import Authentication, WebHeader
from tidegate.core.args import render_query
from tidegate.metrics._base import Credentials, MeasurementError, bounded_request, parse_json, shorten
from tidegate.metrics._http import Outbound

__all__ = ["argo_credentials", "with_headers"]

TOKEN_TIMEOUT = 10.0
"""Seconds an OAuth2 token request may take."""


def with_headers(
    credentials: Credentials, headers: Sequence[WebHeader], args: Mapping[str, str]
) -> Credentials:
    """`credentials` with the template's headers added (credentials win on a clash)."""
    rendered = {header.key: render_query(header.value, args, escape="none") for header in headers}
    return Credentials(headers={**rendered, **credentials.headers}, secrets=credentials.secrets)


async def argo_credentials(
    authentication: Authentication | None,
    args: Mapping[str, str],
    outbound: Outbound,
) -> Credentials:
    """Headers for Argo's basicAuth or oauth2 (none when neither is set); MeasurementError
    (credential-free) when one is incomplete or the token endpoint does not answer with a token."""
    if authentication is None:
        return Credentials(headers={}, secrets=())
    if authentication.sigv4:
        raise MeasurementError("authentication.sigv4: not supported by Tidegate (AWS SigV4 signing)")
    basic = authentication.basic_auth
    if basic is not None and (basic.username or basic.password):
        username = render_query(basic.username or "", args, escape="none")
        password = render_query(basic.password or "", args, escape="none")
        for name, value in (("username", username), ("password", password)):
            if not value:
                raise MeasurementError(f"missing mandatory parameter in metric for basic auth setup: {name}")
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        scrubbed = (password, encoded, *((username,) if len(username) >= 4 else ()))
        return Credentials(headers={"Authorization": f"Basic {encoded}"}, secrets=scrubbed)
    oauth = authentication.oauth2
    if oauth is not None and oauth.token_url:
        client_id = render_query(oauth.client_id or "", args, escape="none")
        secret = render_query(oauth.client_secret or "", args, escape="none")
        if not client_id or not secret:
            raise MeasurementError("missing mandatory parameter in metric for OAuth2 setup")
        token = await _client_credentials_token(
            render_query(oauth.token_url, args, escape="none"),
            client_id,
            secret,
            oauth.scopes,
            outbound,
        )
        return Credentials(headers={"Authorization": f"Bearer {token}"}, secrets=(token, secret))
    return Credentials(headers={}, secrets=())


async def _client_credentials_token(
    url: str, client_id: str, secret: str, scopes: Sequence[str], outbound: Outbound
) -> str:
    """The token, asked for under the operator's outbound policy like any measurement (the
    request carries the client secret: only hosts allowed for Secrets may receive it)."""
    form = {"grant_type": "client_credentials"}
    if scopes:
        form["scope"] = " ".join(scopes)
    where = f"oauth2 token {url.split('?', 1)[0]}"
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")
    answer = await bounded_request(
        outbound.with_secrets(True),
        "POST",
        url,
        where=where,
        timeout=TOKEN_TIMEOUT,
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        content=urlencode(form),
    )
    try:
        body = parse_json(answer.body, where)
    except MeasurementError:
        body = None
    token = body.get("access_token") if isinstance(body, dict) else None
    if answer.status_code >= 400 or not isinstance(token, str) or not token:
        detail = shorten(str(body.get("error")), 80) if isinstance(body, dict) else "not JSON"
        raise MeasurementError(f"{where}: HTTP {answer.status_code}, no access_token ({detail})")
    return token
