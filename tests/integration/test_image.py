"""The operator image `make image` builds: an OCI archive that runs as the chart's account.

`hack/image/build.sh` (a no-op when its cache is warm; `make test` builds it first) gives the
archive. The tests read its manifest and config as any OCI tool would, then load it into a
buildah store of their own and run the image's own entrypoint from its root filesystem
(`buildah run`, chroot isolation: the host's network, so the sandbox's API server on
127.0.0.1) with the chart's ServiceAccount token, CA and namespace mounted where in-cluster
configuration looks, and the chart's leader-election flags; it drives examples/canary to
completion. The session operator is stopped meanwhile, as in test_install.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.dsl import _load, given
from tests.integration.test_install import (  # noqa: F401 - fixtures
    HOST,
    Release,
    audited_requests,
    cluster_release,
    request_kind,
    session_operator_stopped,
    short_pauses,
)
from tests.kube import REPO, Kube, wait_until
from tidegate.sandbox import Sandbox
from tidegate.sandbox.cluster import free_port

pytestmark = pytest.mark.sandbox

# Where in-cluster configuration reads the token: /var/run/secrets/kubernetes.io/serviceaccount.
# /var/run is a symlink to /run in the image, and buildah's chroot mounts only onto the real
# path, so the directory goes there; the operator reads it through the symlink, as in a pod.
SA_DIR = "/run/secrets/kubernetes.io/serviceaccount"


@cache
def archive() -> Path:
    proc = subprocess.run(
        ["bash", str(REPO / "hack/image/build.sh")], capture_output=True, text=True, timeout=3600, check=False
    )
    assert proc.returncode == 0, f"make image failed:\n{proc.stderr[-4000:]}"
    return Path(proc.stdout.strip().splitlines()[-1])


def _blob(tar: tarfile.TarFile, digest: str) -> Any:
    algorithm, _, value = digest.partition(":")
    member = tar.extractfile(f"blobs/{algorithm}/{value}")
    assert member is not None, digest
    return json.load(member)


def image_config() -> dict[str, Any]:
    """The OCI image config, read from the archive's index -> manifest -> config."""
    with tarfile.open(archive()) as tar:
        layout = tar.extractfile("oci-layout")
        assert layout is not None and json.load(layout)["imageLayoutVersion"] == "1.0.0"
        index = tar.extractfile("index.json")
        assert index is not None
        (entry,) = json.load(index)["manifests"]
        manifest = _blob(tar, entry["digest"])
        return dict(_blob(tar, manifest["config"]["digest"]))


def test_the_archive_is_an_oci_image_of_the_dockerfile() -> None:
    config = image_config()["config"]
    assert config["Entrypoint"] == ["tidegate", "operator"]
    assert config["User"] == "65532:65532"
    assert "8080/tcp" in config.get("ExposedPorts", {})
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["PATH"].startswith("/opt/tidegate/bin:") and env["HOME"] == "/tmp"


class Buildah:
    """buildah with a store of its own (vfs), for running the archive as a user would load it."""

    def __init__(self, root: Path) -> None:
        self.args = ["buildah", "--root", str(root / "storage"), "--runroot", str(root / "run")]
        self.args += ["--storage-driver", "vfs"]

    def __call__(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            [*self.args, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert proc.returncode == 0, f"buildah {' '.join(args)}: {proc.stderr[-2000:]}"
        return proc.stdout.strip()

    def popen(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [*self.args, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )


@pytest.fixture
def container(tmp_path: Path) -> Iterator[tuple[Buildah, str]]:
    root = Path(tempfile.mkdtemp(prefix="tidegate-image-test-"))
    buildah = Buildah(root)
    name = buildah("from", "--pull-never", "--quiet", f"oci-archive:{archive()}", timeout=600)
    try:
        yield buildah, name
    finally:
        subprocess.run([*buildah.args, "rm", name], capture_output=True, check=False)
        subprocess.run([*buildah.args, "rmi", "--all", "--force"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def service_account_dir(sandbox: Sandbox, release: Release, path: Path) -> tuple[str, int]:
    """token, ca.crt and namespace as the kubelet mounts them; the API server's host and port."""
    admin = yaml.safe_load(sandbox.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    import base64
    from urllib.parse import urlparse

    path.mkdir(parents=True)
    token = sandbox.kubectl(
        "-n", release.namespace, "create", "token", release.account, "--duration=1h"
    ).stdout
    (path / "token").write_text(token.strip())
    (path / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    (path / "namespace").write_text(release.namespace)
    for f in path.iterdir():
        f.chmod(0o644)
    path.chmod(0o755)
    server = urlparse(cluster["server"])
    assert server.hostname and server.port
    return server.hostname, server.port


def test_the_image_runs_as_the_charts_account_and_drives_a_canary(
    sandbox: Sandbox,
    cluster_release: Release,  # noqa: F811
    bare_kube: Kube,
    session_operator_stopped: None,  # noqa: F811
    container: tuple[Buildah, str],
    tmp_path: Path,
) -> None:
    buildah, name = container
    host, port = service_account_dir(sandbox, cluster_release, tmp_path / "sa")
    metrics = free_port()
    entrypoint = image_config()["config"]["Entrypoint"]
    log = tmp_path / "image-operator.log"
    proc = buildah.popen(
        "run",
        "--isolation",
        "chroot",
        "--user",
        "65532:65532",
        "-v",
        f"{tmp_path / 'sa'}:{SA_DIR}:ro",
        "--env",
        f"KUBERNETES_SERVICE_HOST={host}",
        "--env",
        f"KUBERNETES_SERVICE_PORT={port}",
        "--env",
        f"POD_NAMESPACE={cluster_release.namespace}",
        name,
        "--",
        *entrypoint,
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(metrics),
        "--log-format",
        "json",
        *cluster_release.election_args,
        log=log,
    )
    try:

        def ready_or_exited() -> bool:
            if proc.poll() is not None:
                return True
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=2) as r:
                    return int(r.status) == 200
            except OSError:
                return False

        wait_until(ready_or_exited, 120, interval=0.5, what="the image's operator /readyz")
        assert proc.poll() is None, (
            f"the image's operator exited {proc.returncode}: {log.read_text()[-3000:]}"
        )
        doc = short_pauses(_load("examples/canary/rollout.yaml", "Rollout"))
        s = given(bare_kube).objects(*HOST).rollout(doc)
        s.when().applied().then().phase("Healthy", timeout=90)
        s.when().image("registry.example/web:2.0").then().phase("Healthy", timeout=180)
        st = bare_kube.status("web")
        assert st["stableRS"] == st["currentPodHash"]
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        promoted = [
            x
            for x in lines
            if x.get("reason") == "RolloutPromoted" and x.get("namespace") == bare_kube.namespace
        ]
        assert promoted, "the image's operator logged the promotion"
        # Every write came from the chart's account (the API server's audit log says who).
        writes = {
            request_kind(e) for e in audited_requests(sandbox, cluster_release.user) if e["verb"] == "patch"
        }
        assert ("patch", "tidegate.io/rollouts/status") in writes, writes
    finally:
        # SIGTERM to the group (buildah and the operator it runs): the operator gives up its Lease.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
