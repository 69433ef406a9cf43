"""Kubeconfig resolved as kubectl resolves it, without importing the `kubernetes` client.

Why not `kubernetes.config`: importing it loads the whole generated client (every API
and model class), 0.4-0.9 s on the 2-core machine this runs on, where `tidegate list`
has 0.5 s in all (`bench/cli_startup.py`). The rules followed are client-go's
(`clientcmd`): `$KUBECONFIG` is a list of files joined with `:`; for each cluster, user
and context the first file that names it wins, and so does the first `current-context`;
relative paths are relative to the file that holds them; `*-data` fields are base64.
Users authenticate with a client certificate, a bearer token (`token`, `tokenFile`),
basic auth, or an `exec` credential plugin (client.authentication.k8s.io v1 and
v1beta1). The rare `auth-provider` (legacy OIDC/GCP/Azure) is handed to the kubernetes
client's own loader, which knows those (`_via_kubernetes_client`).

In a pod without a kubeconfig, the service account's token and CA are used (client-go's
`rest.InClusterConfig`).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_TIMEOUT_SECONDS = 60


class KubeconfigError(Exception):
    """The kubeconfig cannot be used; the message says which file, context or field."""


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are."""

    server: str
    namespace: str = "default"
    context: str | None = None
    ca_file: str | None = None
    ca_data: str | None = None
    """PEM text of the CA bundle."""
    insecure: bool = False
    tls_server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None


def config_files(explicit: str | None) -> list[Path]:
    """The kubeconfig files to read: --kubeconfig, else $KUBECONFIG's list, else ~/.kube/config."""
    if explicit:
        return [Path(explicit).expanduser()]
    listed = os.environ.get("KUBECONFIG")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(), Loader=loader)
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KubeconfigError(f"{path}: not a kubeconfig (a mapping expected)")
    return data


@dataclass(frozen=True)
class _Entry:
    value: dict[str, Any]
    base: Path
    """The directory of the file that defined it: relative paths are relative to it."""


@dataclass
class Merged:
    """The kubeconfig files merged by client-go's rules (the first definition of a name wins)."""

    clusters: dict[str, _Entry]
    users: dict[str, _Entry]
    contexts: dict[str, _Entry]
    current_context: str | None
    files: list[Path]


def merge(files: list[Path]) -> Merged:
    merged = Merged({}, {}, {}, None, [])
    for path in files:
        if not path.exists():
            continue  # client-go skips missing files in the list
        data = _load_yaml(path)
        merged.files.append(path)
        base = path.resolve().parent
        for key, store, inner in (
            ("clusters", merged.clusters, "cluster"),
            ("users", merged.users, "user"),
            ("contexts", merged.contexts, "context"),
        ):
            for item in data.get(key) or []:
                if isinstance(item, dict) and item.get("name") and item["name"] not in store:
                    store[str(item["name"])] = _Entry(dict(item.get(inner) or {}), base)
        if merged.current_context is None and data.get("current-context"):
            merged.current_context = str(data["current-context"])
    return merged


def contexts(explicit: str | None) -> list[str]:
    """The context names of the kubeconfig (for completion); [] when there is none."""
    try:
        return sorted(merge(config_files(explicit)).contexts)
    except (KubeconfigError, OSError):
        return []


def _path(entry: _Entry, key: str) -> str | None:
    value = entry.value.get(key)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else entry.base / path)


def _b64(entry: _Entry, key: str, where: str) -> bytes | None:
    value = entry.value.get(key)
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=False)
    except ValueError as exc:
        raise KubeconfigError(f"{where}: {key} is not base64") from exc


def load(explicit_file: str | None, context: str | None) -> Credentials:
    """The credentials of `context` (default: the current one); KubeconfigError names what is wrong."""
    files = config_files(explicit_file)
    if explicit_file and not files[0].exists():
        raise KubeconfigError(f"{files[0]}: no such file")
    merged = merge(files)
    if not merged.files:
        raise KubeconfigError(f"no kubeconfig found ({', '.join(str(f) for f in files)})")
    name = context or merged.current_context
    if not name:
        raise KubeconfigError("no current-context is set; pass --context")
    ctx = merged.contexts.get(name)
    if ctx is None:
        known = ", ".join(sorted(merged.contexts)) or "none"
        raise KubeconfigError(f'context "{name}" not found in the kubeconfig (contexts: {known})')
    cluster_name = str(ctx.value.get("cluster") or "")
    cluster = merged.clusters.get(cluster_name)
    if cluster is None:
        raise KubeconfigError(f'context "{name}": cluster "{cluster_name}" not found in the kubeconfig')
    server = str(cluster.value.get("server") or "")
    if not server:
        raise KubeconfigError(f'cluster "{cluster_name}": no server')
    user_name = str(ctx.value.get("user") or "")
    user = merged.users.get(user_name, _Entry({}, cluster.base))
    where = f'user "{user_name}"'
    ca_data = _b64(cluster, "certificate-authority-data", f'cluster "{cluster_name}"')
    creds = Credentials(
        server=server.rstrip("/"),
        namespace=str(ctx.value.get("namespace") or "default"),
        context=name,
        ca_file=_path(cluster, "certificate-authority"),
        ca_data=ca_data.decode() if ca_data else None,
        insecure=bool(cluster.value.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.value.get("tls-server-name") or None,
        cert_file=_path(user, "client-certificate"),
        key_file=_path(user, "client-key"),
        cert_data=_b64(user, "client-certificate-data", where),
        key_data=_b64(user, "client-key-data", where),
        token=user.value.get("token") or None,
        username=user.value.get("username") or None,
        password=user.value.get("password") or None,
    )
    token_file = _path(user, "tokenFile")
    if not creds.token and token_file:
        try:
            creds = replace(creds, token=Path(token_file).read_text().strip())
        except OSError as exc:
            raise KubeconfigError(f"{where}: tokenFile: {exc}") from exc
    if user.value.get("exec"):
        creds = _exec(creds, user, where)
    elif user.value.get("auth-provider"):
        creds = _via_kubernetes_client(creds, explicit_file, name)
    return creds


def _exec(creds: Credentials, user: _Entry, where: str) -> Credentials:
    """Run an exec credential plugin (client-go's `exec` authenticator) and take its token or cert."""
    spec = user.value["exec"] or {}
    command = str(spec.get("command") or "")
    if not command:
        raise KubeconfigError(f"{where}: exec has no command")
    if "/" in command and not Path(command).is_absolute():
        command = str(user.base / command)
    env = dict(os.environ)
    for item in spec.get("env") or []:
        env[str(item.get("name"))] = str(item.get("value") or "")
    api_version = str(spec.get("apiVersion") or "client.authentication.k8s.io/v1")
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {
            "apiVersion": api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
    )
    try:
        done = subprocess.run(
            [command, *[str(a) for a in spec.get("args") or []]],
            env=env,
            capture_output=True,
            text=True,
            timeout=EXEC_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KubeconfigError(f"{where}: exec {command}: {exc}") from exc
    if done.returncode != 0:
        raise KubeconfigError(f"{where}: exec {command} exited {done.returncode}: {done.stderr.strip()}")
    try:
        status = (json.loads(done.stdout) or {}).get("status") or {}
    except ValueError as exc:
        raise KubeconfigError(f"{where}: exec {command} printed no ExecCredential JSON") from exc
    if status.get("token"):
        return replace(creds, token=str(status["token"]))
    if status.get("clientCertificateData") and status.get("clientKeyData"):
        return replace(
            creds,
            cert_data=str(status["clientCertificateData"]).encode(),
            key_data=str(status["clientKeyData"]).encode(),
            cert_file=None,
            key_file=None,
        )
    raise KubeconfigError(f"{where}: exec {command} returned neither a token nor a client certificate")


def _via_kubernetes_client(creds: Credentials, explicit_file: str | None, context: str) -> Credentials:
    """An `auth-provider` user: the kubernetes client's loader knows the providers; take its result."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=explicit_file, context=context, client_configuration=cfg
        )
    except (ConfigException, OSError) as exc:
        raise KubeconfigError(f"kubeconfig: {exc}") from exc
    keys = cfg.api_key or {}
    authorization = str(keys.get("BearerToken") or keys.get("authorization") or "")
    token = authorization.removeprefix("Bearer ").strip() or creds.token
    return replace(creds, token=token or None)


def in_cluster(environ: dict[str, str] | None = None, account: Path = SERVICE_ACCOUNT) -> Credentials | None:
    """The service account's credentials in a pod (client-go's rest.InClusterConfig); None elsewhere."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token_file = account / "token"
    if not host or not port or not token_file.exists():
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6
    namespace_file = account / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else "default"
    return Credentials(
        server=f"https://{host}:{port}",
        namespace=namespace or "default",
        ca_file=str(account / "ca.crt"),
        token=token_file.read_text().strip(),
    )
