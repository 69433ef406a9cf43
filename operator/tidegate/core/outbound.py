"""Which addresses a metric provider may call: the outbound policy, decided without I/O.

A Rollout author writes the URL a web metric calls and the address of a Prometheus, and the
operator makes the request from inside the cluster with the operator's network position. The
policy keeps that from becoming a way into what the author could not reach otherwise:

- only `http` and `https`;
- the Kubernetes API server (every address it is known by) is refused;
- loopback, link-local (which holds the cloud metadata services, 169.254.169.254), the
  unspecified address and the metadata names (`metadata.google.internal`, ...) are refused
  unless an `allow` entry names them explicitly: an entry inside the refused range
  (`127.0.0.0/8`, `127.0.0.1`, `localhost`), never a broad one like `0.0.0.0/0`;
- `deny` entries are refused whatever else is listed;
- a non-empty `allow` list is exclusive: only what it names is called;
- a request that carries a Secret (authentication from a Secret, a `secretKeyRef` argument)
  goes only to an entry of `secret_allow` (empty: Secrets go nowhere).

Entries are host names (`prometheus.monitoring.svc`, `*.example.com` for any subdomain),
IP addresses or CIDRs. Host names are compared with the URL's host; addresses with every
address the host resolves to (the caller resolves, checks each, and connects to a checked
one, so a DNS answer that changes between the check and the connection gains nothing).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "METADATA_HOSTS",
    "REFUSED_NETWORKS",
    "Entry",
    "OutboundPolicy",
    "literal_problem",
    "parse_entries",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
"""Largest answer a provider reads (1 MiB); the body is streamed and dropped beyond it."""

SCHEMES = ("http", "https")

REFUSED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("127.0.0.0/8", "a loopback address"),
        ("::1/128", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (cloud metadata services live there)"),
        ("fe80::/10", "a link-local address"),
        ("fd00:ec2::254/128", "the cloud metadata address"),
        ("100.100.100.200/32", "the cloud metadata address"),
        ("0.0.0.0/8", "an unspecified address"),
        ("::/128", "an unspecified address"),
    )
)
"""Refused unless an allow entry inside the network names them."""

METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "localhost",
    }
)
"""Host names refused by name (they resolve to the refused networks anyway)."""


def _host(text: str) -> str:
    return text.strip().lower().rstrip(".")


@dataclass(frozen=True)
class Entry:
    """One allow/deny entry: a host name (maybe `*.suffix`) or a network."""

    text: str
    host: str | None = None
    network: IPNetwork | None = None

    def matches_host(self, host: str) -> bool:
        if self.host is None:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def matches_address(self, address: IPAddress) -> bool:
        return (
            self.network is not None and address.version == self.network.version and address in self.network
        )

    def names_explicitly(self, refused: IPNetwork) -> bool:
        """Whether this entry lies inside a refused network (so it lifts the refusal there)."""
        if self.network is None or self.network.version != refused.version:
            return False
        return self.network.subnet_of(refused)  # type: ignore[arg-type]


def parse_entries(text: str | Iterable[str]) -> tuple[Entry, ...]:
    """Entries from a comma- or space-separated string (or a list); ValueError names a bad one."""
    items = text.replace(",", " ").split() if isinstance(text, str) else [str(t) for t in text]
    entries: list[Entry] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            network = ipaddress.ip_network(item.strip("[]"), strict=False)
        except ValueError:
            host = _host(item)
            if not host or "/" in host or ":" in host or any(c.isspace() for c in host):
                raise ValueError(f"{item!r} is neither a host name, an IP address nor a CIDR") from None
            entries.append(Entry(item, host=host))
        else:
            entries.append(Entry(item, network=network))
    return tuple(entries)


def _address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


@dataclass(frozen=True)
class OutboundPolicy:
    """Where providers may send requests, and how much of an answer they read."""

    allow: tuple[Entry, ...] = ()
    deny: tuple[Entry, ...] = ()
    secret_allow: tuple[Entry, ...] = ()
    api_servers: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    """(address, port) of the Kubernetes API server, refused whatever the lists say."""
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def url_problem(self, url: str, *, secrets: bool = False) -> str | None:
        """What is wrong with calling `url` before any address is known (None: nothing yet)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            shown = scheme or "none"
            return f"scheme {shown!r} is refused: only http and https"
        host = _host(parts.hostname or "")
        if not host:
            return "the URL names no host"
        for entry in self.deny:
            if entry.matches_host(host):
                return f"host {host} is refused by the deny list ({entry.text})"
        if host in METADATA_HOSTS and not any(e.matches_host(host) for e in self.allow):
            return f"host {host} is refused: a metadata or loopback name"
        return None

    def address_problem(self, host: str, address: str, port: int, *, secrets: bool = False) -> str | None:
        """Whether `host`, resolved to `address`, may be called on `port` (None: it may)."""
        host = _host(host)
        try:
            ip = _address(address)
        except ValueError:
            return f"{host} resolved to {address!r}, not an IP address"
        shown = host if host == str(ip) else f"{host} ({ip})"
        for entry in self.deny:
            if entry.matches_host(host) or entry.matches_address(ip):
                return f"{shown} is refused by the deny list ({entry.text})"
        for server, server_port in self.api_servers:
            try:
                same = _address(server) == ip
            except ValueError:
                same = _host(server) == host
            if same and server_port == port:
                return f"{shown}:{port} is the Kubernetes API server: refused"
        allowed_by = [e for e in self.allow if e.matches_host(host) or e.matches_address(ip)]
        if self.allow and not allowed_by:
            return f"{shown} is not in the allow list"
        for network, why in REFUSED_NETWORKS:
            if ip.version == network.version and ip in network:
                explicit = any(
                    e.names_explicitly(network) or (e.host is not None and not e.host.startswith("*."))
                    for e in allowed_by
                )
                if not explicit:
                    return f"{shown} is refused: {why} (allow it by naming {network} or the host)"
        if secrets and not any(e.matches_host(host) or e.matches_address(ip) for e in self.secret_allow):
            return f"{shown} is not allowed to receive Secrets (not in the Secrets allow list)"
        return None


def literal_problem(policy: OutboundPolicy, url: str) -> str | None:
    """What the policy refuses in a URL as written, before any name is resolved: its scheme,
    its host name, or its host when it is an IP address (None: nothing yet, or it holds an
    `{{args.NAME}}` to be filled in per run). For a Warning when a template is applied."""
    if "{{" in url:
        return None
    problem = policy.url_problem(url)
    if problem is not None:
        return problem
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        _address(host)
    except ValueError:
        return None  # a name: judged once resolved, at measurement time
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return f"the URL's port is not a number: {url}"
    return policy.address_problem(host, host, port)
