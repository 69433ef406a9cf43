"""The outbound policy's decisions, as tables: schemes, names, every resolved address, Secrets."""

from __future__ import annotations

import gzip
import zlib

import pytest

from tidegate.core.outbound import OutboundPolicy, parse_entries
from tidegate.metrics._http import ResponseTooLarge, _decoded, policy_from_env

API = frozenset({("10.96.0.1", 443), ("127.0.0.1", 6443)})
DEFAULT = OutboundPolicy(api_servers=API)
SANDBOX = OutboundPolicy(allow=parse_entries("0.0.0.0/0 ::/0 127.0.0.0/8 ::1"), api_servers=API)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://prometheus.monitoring.svc:9090", None),
        ("https://metrics.example.com/x", None),
        ("ftp://example.com/x", "scheme 'ftp' is refused: only http and https"),
        ("file:///etc/passwd", "scheme 'file' is refused"),
        ("gopher://example.com", "scheme 'gopher' is refused"),
        ("example.com/x", "scheme 'none' is refused"),
        ("http:///x", "the URL names no host"),
        ("http://metadata.google.internal/computeMetadata/v1/", "a metadata or loopback name"),
        ("http://METADATA.google.internal./x", "a metadata or loopback name"),
        ("http://localhost:9090/", "a metadata or loopback name"),
    ],
)
def test_schemes_and_names_refused_before_any_connection(url: str, problem: str | None) -> None:
    found = DEFAULT.url_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found), found


@pytest.mark.parametrize(
    ("policy", "host", "address", "port", "problem"),
    [
        (DEFAULT, "prometheus", "10.0.3.7", 9090, None),
        (DEFAULT, "example.com", "93.184.216.34", 443, None),
        (DEFAULT, "x", "127.0.0.1", 9090, "a loopback address"),
        (DEFAULT, "x", "127.9.9.9", 80, "a loopback address"),
        (DEFAULT, "x", "::1", 80, "a loopback address"),
        (DEFAULT, "x", "::ffff:127.0.0.1", 80, "a loopback address"),
        (DEFAULT, "x", "169.254.169.254", 80, "link-local"),
        (DEFAULT, "x", "::ffff:169.254.169.254", 80, "link-local"),
        (DEFAULT, "x", "fe80::1%eth0", 80, "link-local"),
        (DEFAULT, "x", "fd00:ec2::254", 80, "the cloud metadata address"),
        (DEFAULT, "x", "100.100.100.200", 80, "the cloud metadata address"),
        (DEFAULT, "x", "0.0.0.0", 80, "an unspecified address"),
        (DEFAULT, "kubernetes.default.svc", "10.96.0.1", 443, "is the Kubernetes API server"),
        (DEFAULT, "x", "10.96.0.1", 80, None),
        (SANDBOX, "x", "127.0.0.1", 9090, None),
        (SANDBOX, "x", "127.0.0.1", 6443, "is the Kubernetes API server"),
        (SANDBOX, "x", "169.254.169.254", 80, "link-local"),
        (SANDBOX, "x", "10.0.0.1", 80, None),
        (OutboundPolicy(allow=parse_entries("0.0.0.0/0")), "x", "169.254.169.254", 80, "link-local"),
        (OutboundPolicy(allow=parse_entries("169.254.169.254")), "x", "169.254.169.254", 80, None),
        (OutboundPolicy(allow=parse_entries("prom.internal")), "prom.internal", "127.0.0.1", 80, None),
        (OutboundPolicy(allow=parse_entries("*.internal")), "a.internal", "127.0.0.1", 80, "a loopback"),
        (OutboundPolicy(allow=parse_entries("*.internal")), "a.internal", "10.1.1.1", 80, None),
        (OutboundPolicy(allow=parse_entries("10.0.0.0/8")), "x", "10.1.2.3", 80, None),
        (OutboundPolicy(allow=parse_entries("10.0.0.0/8")), "x", "192.168.1.1", 80, "not in the allow list"),
        (OutboundPolicy(deny=parse_entries("10.0.0.0/8")), "x", "10.1.2.3", 80, "deny list (10.0.0.0/8)"),
        (
            OutboundPolicy(allow=parse_entries("etcd.internal"), deny=parse_entries("etcd.internal")),
            "etcd.internal",
            "10.0.0.5",
            2379,
            "by the deny list",
        ),
        (DEFAULT, "x", "not-an-ip", 80, "not an IP address"),
    ],
)
def test_every_resolved_address_is_judged(
    policy: OutboundPolicy, host: str, address: str, port: int, problem: str | None
) -> None:
    found = policy.address_problem(host, address, port)
    assert (found is None) if problem is None else (found is not None and problem in found), found


@pytest.mark.parametrize(
    ("secret_allow", "host", "address", "allowed"),
    [
        ("", "prometheus", "10.0.3.7", False),
        ("prometheus", "prometheus", "10.0.3.7", True),
        ("prometheus", "evil.example.com", "10.0.3.7", False),
        ("10.0.0.0/8", "evil.example.com", "10.0.3.7", True),
        ("*.monitoring.svc", "prom.monitoring.svc", "10.0.3.7", True),
        ("*.monitoring.svc", "monitoring.svc.evil.com", "10.0.3.7", False),
    ],
)
def test_secrets_go_only_to_the_secrets_allow_list(
    secret_allow: str, host: str, address: str, allowed: bool
) -> None:
    policy = OutboundPolicy(secret_allow=parse_entries(secret_allow))
    assert policy.address_problem(host, address, 80) is None, "without a Secret anything public goes"
    found = policy.address_problem(host, address, 80, secrets=True)
    assert (found is None) == allowed, found
    if not allowed:
        assert found is not None and "not allowed to receive Secrets" in found


@pytest.mark.parametrize(
    ("text", "error"),
    [("a b,c", None), ("10.0.0.0/8, ::1", None), ("http://x/", "is neither"), ("a/b", "is neither")],
)
def test_entries_parse_or_name_the_bad_one(text: str, error: str | None) -> None:
    if error is None:
        assert len(parse_entries(text)) == 3 if text == "a b,c" else 2
    else:
        with pytest.raises(ValueError, match=error):
            parse_entries(text)


def test_the_environment_configures_the_policy_and_the_cap() -> None:
    policy = policy_from_env(
        {
            "TIDEGATE_OUTBOUND_ALLOW": "127.0.0.0/8",
            "TIDEGATE_OUTBOUND_DENY": "10.0.0.0/8",
            "TIDEGATE_OUTBOUND_SECRET_ALLOW": "prometheus",
            "TIDEGATE_METRIC_MAX_RESPONSE_BYTES": "2048",
        }
    )
    assert [e.text for e in policy.allow] == ["127.0.0.0/8"]
    assert [e.text for e in policy.deny] == ["10.0.0.0/8"]
    assert [e.text for e in policy.secret_allow] == ["prometheus"]
    assert policy.max_response_bytes == 2048
    assert policy_from_env({}).max_response_bytes == 1024 * 1024
    with pytest.raises(ValueError, match="TIDEGATE_METRIC_MAX_RESPONSE_BYTES"):
        policy_from_env({"TIDEGATE_METRIC_MAX_RESPONSE_BYTES": "lots"})


@pytest.mark.parametrize(
    ("body", "encoding", "outcome"),
    [
        (b'{"a": 1}', "", b'{"a": 1}'),
        (gzip.compress(b'{"a": 1}'), "gzip", b'{"a": 1}'),
        (zlib.compress(b'{"a": 1}'), "deflate", b'{"a": 1}'),
        (gzip.compress(b"0" * 5000), "gzip", ResponseTooLarge),
        (b"not gzip", "gzip", ValueError),
        (b"x", "br", ValueError),
    ],
)
def test_a_compressed_answer_is_capped_once_decompressed(
    body: bytes, encoding: str, outcome: bytes | type[Exception]
) -> None:
    if isinstance(outcome, bytes):
        assert _decoded(body, encoding, 1000) == outcome
    else:
        with pytest.raises(outcome):
            _decoded(body, encoding, 1000)


def test_the_api_server_is_known_by_the_kubeconfigs_host_and_the_kubernetes_service() -> None:
    from tidegate.cli.operator_cmd import api_server_addresses

    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    known = api_server_addresses("https://127.0.0.1:6443", env)
    assert {("127.0.0.1", 6443), ("10.96.0.1", 443)} <= known
    assert api_server_addresses("https://[::1]:8443", {}) >= {("::1", 8443)}
    policy = OutboundPolicy(allow=parse_entries("127.0.0.0/8 ::1 10.0.0.0/8"), api_servers=known)
    problem = policy.address_problem("kubernetes.default.svc", "10.96.0.1", 443)
    assert problem is not None and "Kubernetes API server" in problem


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://prometheus.monitoring.svc:9090", None),
        ("http://{{args.host}}/x", None),
        ("http://127.0.0.1:9090", "a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
        ("https://10.96.0.1/version", "is the Kubernetes API server"),
        ("http://metadata.google.internal/", "a metadata or loopback name"),
        ("ftp://example.com/", "only http and https"),
    ],
)
def test_a_template_is_warned_of_what_the_policy_refuses_as_written(url: str, problem: str | None) -> None:
    from tidegate.core.outbound import literal_problem

    found = literal_problem(DEFAULT, url)
    assert (found is None) if problem is None else (found is not None and problem in found), found
