"""Start and stop the local control plane.

Every process binds 127.0.0.1 only. State lives in one directory (kubeconfig, PKI,
etcd data, logs, pids); `down` stops every process it started and removes it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
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
from tidegate.sandbox._base import SandboxDir, SandboxError, _pid_alive, free_port, wait_for
from tidegate.sandbox.certs import write_pki
from tidegate.sandbox.podprocs import start_supervisor
from tidegate.sandbox.prometheus import start_prometheus

OUTBOUND_ENV = {
    "TIDEGATE_OUTBOUND_ALLOW": "0.0.0.0/0 ::/0 127.0.0.0/8 ::1",
    "TIDEGATE_OUTBOUND_SECRET_ALLOW": "127.0.0.0/8 ::1",
}
"""The operator's outbound policy on the sandbox: its Prometheus, the demo app and test servers
listen on loopback, which an operator refuses unless told (`docs/install.md`, "Outbound
requests"); the API server and link-local addresses stay refused."""

NODE_COUNT = 3

JOB_EXIT = r"(^|[;&|[:space:]])exit +[1-9][0-9]*([;&|[:space:]]|$)"
"""A command or argument of a Job's container that exits with a code other than 0: `[sh, -c,
"exit 1"]`, as Argo Rollouts' analysis-template examples write a failing job."""

JOB_POD_FAILS = f"""\
# Tidegate's sandbox: kwok has no containers to run, so a Job's pod is finished by a stage.
# kwok's own pod-complete stage makes every Running pod of a Job Succeeded; this one, which
# outweighs it for the pods it selects, makes it Failed when a container's command or args
# say `exit N` with N other than 0, so that the Job controller marks the Job failed.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: tidegate-job-pod-fail
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  weight: 1
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.metadata.ownerReferences.[].kind'
      operator: 'In'
      values: ['Job']
    - key: >-
        any(.spec.containers[] | (.command // []) + (.args // []) | .[];
        type == "string" and test("{JOB_EXIT}"))
      operator: 'In'
      values: ['true']
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      containerStatuses:
      {{{{ range $index, $item := .spec.containers }}}}
      - image: {{{{ $item.image | Quote }}}}
        name: {{{{ $item.name | Quote }}}}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: 1
            finishedAt: {{{{ $now | Quote }}}}
            reason: Error
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Failed
"""


def default_dir() -> Path:
    return Path(os.environ.get("TIDEGATE_SANDBOX_DIR") or f"/tmp/tidegate-sandbox-{os.getuid()}")


@dataclass
class Sandbox(SandboxDir):
    """The local control plane: start it, stop it, talk to it."""

    @classmethod
    def default(cls) -> Sandbox:
        return cls(default_dir())

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
                f"--config={self._job_stages()}",
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

    def _job_stages(self) -> Path:
        path = self.directory / "kwok-job-stages.yaml"
        path.write_text(JOB_POD_FAILS)
        return path

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
        """Nodes for kwok, the Istio and Gateway API CRDs and Tidegate's CRDs."""
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
        self.kubectl("apply", "--server-side", "-f", str(assets.gateway_api_crds()))
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
        outbound = "".join(f'export {key}="{value}"\n' for key, value in OUTBOUND_ENV.items())
        return f'export KUBECONFIG="{self.kubeconfig}"\nexport PATH="{self.kubectl_dir()}:$PATH"\n{outbound}'
