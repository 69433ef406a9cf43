"""Start and stop the local control plane.

Every process binds 127.0.0.1 only. State lives in one directory (kubeconfig, PKI,
etcd data, logs, pids); `down` stops every process it started and removes it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tidegate.sandbox import assets
from tidegate.sandbox.certs import write_pki

NODE_COUNT = 3


class SandboxError(RuntimeError):
    pass


def default_dir() -> Path:
    return Path(os.environ.get("TIDEGATE_SANDBOX_DIR") or f"/tmp/tidegate-sandbox-{os.getuid()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise SandboxError(f"timed out after {timeout:.0f}s waiting for {what}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Sandbox:
    directory: Path

    @classmethod
    def default(cls) -> Sandbox:
        return cls(default_dir())

    # ------------------------------------------------------------------ paths
    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    @property
    def pki(self) -> Path:
        return self.directory / "pki"

    def state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {}
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        return data

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def kubectl_dir(self) -> Path:
        return assets.binary("kubectl").parent

    # ---------------------------------------------------------------- running
    def is_up(self) -> bool:
        state = self.state()
        if not state:
            return False
        if not all(_pid_alive(pid) for pid in state.get("pids", {}).values()):
            return False
        try:
            return self._get("/readyz") == "ok"
        except Exception:
            return False

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _get(self, path: str, timeout: float = 2.0) -> str:
        url = f"https://127.0.0.1:{self.state()['ports']['apiserver']}{path}"
        with urllib.request.urlopen(url, context=self._ssl(), timeout=timeout) as resp:
            body: bytes = resp.read()
            return body.decode()

    def api_get(self, path: str) -> str:
        return self._get(path, timeout=10)

    def up(self, *, prometheus: bool = True, log: Callable[[str], None] = print) -> float:
        """Start everything (idempotent); returns seconds to a ready API."""
        start = time.monotonic()
        if self.is_up():
            if prometheus and not self.state().get("ports", {}).get("prometheus"):
                self._start_prometheus(log)
            return time.monotonic() - start
        if self.state():
            self.down(log=lambda _m: None)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        bins = {
            name: str(assets.binary(name))
            for name in (
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok",
                "kubectl",
            )
        }
        write_pki(self.pki)
        ports = {
            "etcd": free_port(),
            "etcd_peer": free_port(),
            "apiserver": free_port(),
            "controller_manager": free_port(),
            "scheduler": free_port(),
            "kwok": free_port(),
        }
        state: dict[str, Any] = {"ports": ports, "pids": {}, "bins": bins}
        self._save(state)
        self._write_kubeconfig(ports["apiserver"])
        audit_policy = self.directory / "audit-policy.yaml"
        audit_policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
            "rules:\n- level: Metadata\n"
        )
        pki = self.pki
        self._spawn(
            state,
            "etcd",
            [
                bins["etcd"],
                "--name",
                "sandbox",
                "--data-dir",
                str(self.directory / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{ports['etcd']}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{ports['etcd']}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{ports['etcd_peer']}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{ports['etcd_peer']}",
                "--initial-cluster",
                f"sandbox=http://127.0.0.1:{ports['etcd_peer']}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
                "--quota-backend-bytes",
                str(4 * 1024**3),
            ],
        )
        wait_for(
            lambda: (
                b"true"
                in urllib.request.urlopen(f"http://127.0.0.1:{ports['etcd']}/health", timeout=1).read()
            ),
            30,
            "etcd",
        )
        self._spawn(
            state,
            "kube-apiserver",
            [
                bins["kube-apiserver"],
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.logs / 'audit.log'}",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=1",
                "--profiling=false",
                "--v=0",
            ],
        )
        wait_for(lambda: self._get("/readyz") == "ok", 120, "kube-apiserver /readyz")
        api_ready = time.monotonic() - start
        self._spawn(
            state,
            "kube-controller-manager",
            [
                bins["kube-controller-manager"],
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller_manager']}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
                "--concurrent-replicaset-syncs=10",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
            ],
        )
        self._spawn(
            state,
            "kube-scheduler",
            [
                bins["kube-scheduler"],
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
            ],
        )
        self._spawn(
            state,
            "kwok",
            [
                bins["kwok"],
                f"--kubeconfig={self.kubeconfig}",
                f"--config={assets.kwok_stages()}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.0/16",
                "--node-ip=127.0.0.1",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ],
        )
        self._bootstrap(log)
        log(f"sandbox: API ready in {api_ready:.1f}s, everything up in {time.monotonic() - start:.1f}s")
        state = self.state()
        state["api_ready_seconds"] = round(api_ready, 2)
        self._save(state)
        if prometheus:
            self._start_prometheus(log)
        return api_ready

    def _spawn(self, state: dict[str, Any], name: str, argv: list[str]) -> None:
        logf = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        logf.close()
        state["pids"][name] = proc.pid
        self._save(state)

    def _write_kubeconfig(self, port: int) -> None:
        def b64(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tidegate-sandbox",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": b64("ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": "tidegate-admin",
                    "user": {
                        "client-certificate-data": b64("admin.crt"),
                        "client-key-data": b64("admin.key"),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "tidegate-sandbox",
                    "context": {
                        "cluster": "tidegate-sandbox",
                        "user": "tidegate-admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "tidegate-sandbox",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(assets.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            text=True,
            capture_output=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise SandboxError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()[:2000]}")
        return proc

    def _bootstrap(self, log: Callable[[str], None]) -> None:
        """Nodes for kwok, the Istio CRDs and Tidegate's CRDs."""
        wait_for(
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            60,
            "the default ServiceAccount (controller-manager)",
        )
        nodes = []
        for i in range(NODE_COUNT):
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": f"kwok-node-{i}",
                        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/hostname": f"kwok-node-{i}",
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                        },
                    },
                    "status": {
                        "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                    },
                }
            )
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(nodes))
        self.kubectl("apply", "--server-side", "-f", str(assets.istio_crds()))
        self.apply_crds()
        wait_for(
            lambda: (
                self.kubectl(
                    "wait", "--for=condition=Ready", "node", "--all", "--timeout=5s", check=False
                ).returncode
                == 0
            ),
            60,
            "kwok nodes Ready",
        )
        wait_for(
            lambda: (
                self.kubectl(
                    "wait", "--for=condition=Established", "crd", "--all", "--timeout=5s", check=False
                ).returncode
                == 0
            ),
            60,
            "CRDs established",
        )

    def apply_crds(self) -> None:
        from tidegate.api.crdgen import crds, render

        docs = "---\n".join(render(c) for c in crds().values())
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=docs)

    # ------------------------------------------------------------- prometheus
    def _start_prometheus(self, log: Callable[[str], None]) -> None:
        from tidegate.sandbox.podprocs import start_supervisor
        from tidegate.sandbox.prometheus import start_prometheus

        start_prometheus(self, log)
        start_supervisor(self, log)  # demo apps behind demo pods, their targets and load

    # ------------------------------------------------------------------- down
    def down(self, *, log: Callable[[str], None] = print) -> None:
        state = self.state()
        pids = dict(state.get("pids", {}))
        pids.update(state.get("extra_pids", {}))
        for name in reversed(list(pids)):
            pid = pids[name]
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            except PermissionError:
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for pid in pids.values():
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        # Reap children of ours, if we started them in this process.
        for pid in pids.values():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if self.directory.exists():
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)
        log(f"sandbox: stopped {len(pids)} processes and removed {self.directory}")

    def env(self) -> str:
        return f'export KUBECONFIG="{self.kubeconfig}"\nexport PATH="{self.kubectl_dir()}:$PATH"\n'
