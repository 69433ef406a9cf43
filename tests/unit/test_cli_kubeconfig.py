"""The CLI's kubeconfig reader follows client-go's rules; the kubernetes client's own loader is the judge.

Files are real files in a temp dir; the exec plugin is a real script.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidegate.cli._kubeconfig import Credentials, KubeconfigError, config_files, contexts, in_cluster, load

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def kubeconfig(
    path: Path,
    *,
    current: str | None = "a",
    clusters: dict[str, dict[str, Any]] | None = None,
    users: dict[str, dict[str, Any]] | None = None,
    ctxs: dict[str, dict[str, Any]] | None = None,
) -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in (clusters or {}).items()],
        "users": [{"name": n, "user": u} for n, u in (users or {}).items()],
        "contexts": [{"name": n, "context": c} for n, c in (ctxs or {}).items()],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_current_context_gives_server_namespace_and_token(tmp_path: Path) -> None:
    f = kubeconfig(
        tmp_path / "config",
        clusters={"c": {"server": "https://10.0.0.1:6443/", "certificate-authority": "ca.crt"}},
        users={"u": {"token": "abc"}},
        ctxs={"a": {"cluster": "c", "user": "u", "namespace": "shop"}, "b": {"cluster": "c", "user": "u"}},
    )
    creds = load(str(f), None)
    assert (creds.server, creds.namespace, creds.token, creds.context) == (
        "https://10.0.0.1:6443",
        "shop",
        "abc",
        "a",
    )
    assert creds.ca_file == str(tmp_path / "ca.crt")  # relative to the file that names it
    assert load(str(f), "b").namespace == "default"


def test_kubeconfig_lists_merge_with_the_first_definition_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kubeconfig(
        tmp_path / "one",
        current="a",
        clusters={"c": {"server": "https://first"}},
        users={"u": {"token": "t1"}},
        ctxs={"a": {"cluster": "c", "user": "u"}},
    )
    second = kubeconfig(
        tmp_path / "two",
        current="b",
        clusters={"c": {"server": "https://second"}, "d": {"server": "https://d"}},
        users={"u": {"token": "t2"}},
        ctxs={"b": {"cluster": "d", "user": "u"}},
    )
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'missing'}:{second}")
    assert config_files(None) == [first, tmp_path / "missing", second]
    creds = load(None, None)
    assert (creds.server, creds.token, creds.context) == ("https://first", "t1", "a")
    assert load(None, "b").server == "https://d"
    assert contexts(None) == ["a", "b"]


def test_data_fields_are_base64_and_token_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    f = kubeconfig(
        tmp_path / "config",
        clusters={
            "c": {"server": "https://h", "certificate-authority-data": base64.b64encode(CA.encode()).decode()}
        },
        users={
            "u": {
                "tokenFile": "token",
                "client-certificate-data": base64.b64encode(b"CERT").decode(),
                "client-key-data": base64.b64encode(b"KEY").decode(),
            }
        },
        ctxs={"a": {"cluster": "c", "user": "u"}},
    )
    creds = load(str(f), None)
    assert (creds.ca_data, creds.cert_data, creds.key_data, creds.token) == (CA, b"CERT", b"KEY", "from-file")


def test_an_exec_plugin_is_run_and_its_token_used(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.sh"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "exec-token"},
    }
    plugin.write_text(f"#!/bin/sh\ntest \"$GREETING\" = hello || exit 3\necho '{json.dumps(credential)}'\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    f = kubeconfig(
        tmp_path / "config",
        clusters={"c": {"server": "https://h"}},
        users={
            "u": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": "./plugin.sh",
                    "env": [{"name": "GREETING", "value": "hello"}],
                }
            }
        },
        ctxs={"a": {"cluster": "c", "user": "u"}},
    )
    assert load(str(f), None).token == "exec-token"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"ctx": "nope"}, 'context "nope" not found in the kubeconfig (contexts: a)'),
        ({"current": None}, "no current-context is set; pass --context"),
        ({"cluster": "gone"}, 'context "a": cluster "gone" not found in the kubeconfig'),
        ({"server": ""}, 'cluster "c": no server'),
    ],
    ids=["unknown-context", "no-current-context", "unknown-cluster", "no-server"],
)
def test_what_is_wrong_is_named(tmp_path: Path, change: dict[str, Any], words: str) -> None:
    f = kubeconfig(
        tmp_path / "config",
        current=change.get("current", "a"),
        clusters={"c": {"server": change.get("server", "https://h")}},
        users={"u": {"token": "t"}},
        ctxs={"a": {"cluster": change.get("cluster", "c"), "user": "u"}},
    )
    with pytest.raises(KubeconfigError) as err:
        load(str(f), change.get("ctx"))
    assert words in str(err.value)


def test_a_missing_explicit_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="no such file"):
        load(str(tmp_path / "absent"), None)


def test_the_same_answers_as_the_kubernetes_clients_loader(tmp_path: Path) -> None:
    """Server, CA, client certificate and token as kubernetes.config.load_kube_config reads them."""
    from kubernetes import client, config

    for name, content in (("ca.crt", CA), ("tls.crt", "CERT"), ("tls.key", "KEY")):
        (tmp_path / name).write_text(content)
    f = kubeconfig(
        tmp_path / "config",
        clusters={"c": {"server": "https://10.1.2.3:6443", "certificate-authority": "ca.crt"}},
        users={"u": {"client-certificate": "tls.crt", "client-key": "tls.key", "token": "tok"}},
        ctxs={"a": {"cluster": "c", "user": "u", "namespace": "ns1"}},
    )
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(f), client_configuration=cfg)
    ours = load(str(f), None)
    assert ours.server == cfg.host
    assert Path(ours.ca_file or "").read_text() == Path(cfg.ssl_ca_cert).read_text()
    assert Path(ours.cert_file or "").read_text() == Path(cfg.cert_file).read_text()
    assert Path(ours.key_file or "").read_text() == Path(cfg.key_file).read_text()
    assert f"Bearer {ours.token}" == cfg.api_key["BearerToken"]
    _, active = config.list_kube_config_contexts(config_file=str(f))
    assert ours.namespace == active["context"]["namespace"]


def test_in_a_pod_the_service_account_is_used(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "namespace").write_text("team-a")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = in_cluster(env, tmp_path)
    assert creds == Credentials(
        server="https://10.96.0.1:443", namespace="team-a", ca_file=str(tmp_path / "ca.crt"), token="sa-token"
    )
    assert in_cluster({}, tmp_path) is None  # not in a pod
    assert (
        in_cluster({**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path).server == "https://[fd00::1]:443"
    )  # type: ignore[union-attr]


def test_tokens_and_basic_auth_become_the_authorization_header() -> None:
    from tidegate.cli._rest import Api

    bearer = Api(Credentials(server="http://127.0.0.1:9", token="abc"))
    assert bearer._headers["Authorization"] == "Bearer abc"
    basic = Api(Credentials(server="http://127.0.0.1:9", username="ann", password="pw"))
    assert basic._headers["authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()
