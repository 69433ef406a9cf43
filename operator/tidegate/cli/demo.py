"""`make demo` / `tidegate demo`: the whole story on the embedded sandbox, in a few minutes.

1. sandbox up (real control plane, kwok nodes, Prometheus, demo apps behind demo pods);
2. the operator;
3. examples/canary's Services and VirtualService, examples/analysis' template and Rollout;
4. a good version: the live view follows it step by step to 100%;
5. a bad version (25% errors): analysis aborts it, all traffic back on stable;
6. a summary, and how to try it by hand. Nothing is left running unless --keep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml

NAMESPACE = "tidegate-demo"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@dataclass
class Story:
    lines: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        stamp = f"[{time.monotonic() - self.started:6.1f}s]"
        click.echo(click.style(f"{stamp} {text}", bold=True))
        self.lines.append(f"{stamp} {text}")


def _examples_dir() -> Path:
    candidates = [EXAMPLES, Path.cwd() / "examples"]
    for c in candidates:
        if (c / "analysis" / "rollout.yaml").exists():
            return c
    raise click.ClickException("examples/ not found: run the demo from the repository (make demo)")


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _follow(
    sandbox: Any, name: str, until: set[str], timeout: float, live: bool, story: Story
) -> dict[str, Any]:
    """Show the rollout until its phase is in `until` (and up to date); returns its status."""
    from tidegate.cli._kube import Target
    from tidegate.cli.view import render, render_text

    cluster = Target(kubeconfig=str(sandbox.kubeconfig), namespace=NAMESPACE).connect()
    deadline = time.monotonic() + timeout
    last_line = ""

    def done(ro: dict[str, Any]) -> bool:
        st = ro.get("status") or {}
        fresh = st.get("observedGeneration") == (ro.get("metadata") or {}).get("generation")
        return bool(fresh and st.get("phase") in until)

    if live:
        from rich.console import Console
        from rich.live import Live

        with Live(console=Console(), refresh_per_second=4, transient=False) as view:
            while time.monotonic() < deadline:
                snap = cluster.snapshot(name)
                view.update(render(snap, datetime.now(UTC)))
                if snap.rollout is not None and done(snap.rollout):
                    return dict(snap.rollout.get("status") or {})
                time.sleep(0.5)
    else:
        while time.monotonic() < deadline:
            ro = cluster.rollout(name)
            st = ro.get("status") or {}
            weight = ((st.get("canary") or {}).get("weights") or {}).get("canary", {}).get("weight")
            line = f"phase={st.get('phase')} step={st.get('step')} weight={weight}% {st.get('message')}"
            if line != last_line:
                story.say(f"  {line}")
                last_line = line
            if done(ro):
                snap = cluster.snapshot(name)
                click.echo(render_text(snap, datetime.now(UTC)))
                return dict(st)
            time.sleep(0.5)
    raise click.ClickException(f"rollout {name} did not reach {sorted(until)} within {timeout:.0f}s")


def run(keep: bool, live: bool) -> None:
    from tidegate.sandbox import OUTBOUND_ENV, Sandbox
    from tidegate.sandbox.prometheus import address

    story = Story()
    examples = _examples_dir()
    sandbox = Sandbox.default()
    story.say("starting the sandbox: etcd, kube-apiserver, controller-manager, scheduler, kwok, Prometheus")
    sandbox.up(prometheus=True, log=lambda m: click.echo(f"  {m}"))
    operator: subprocess.Popen[bytes] | None = None
    ok = False
    try:
        story.say("starting the operator")
        log = open(sandbox.logs / "operator.log", "ab")  # noqa: SIM115 - owned by the child
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidegate.cli.main",
                "operator",
                "--metrics-host",
                "127.0.0.1",
                "--metrics-port",
                "0",
            ],
            env={**os.environ, **OUTBOUND_ENV, "KUBECONFIG": str(sandbox.kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        state = sandbox.state()
        state.setdefault("extra_pids", {})["operator"] = operator.pid
        sandbox._save(state)

        sandbox.kubectl("create", "namespace", NAMESPACE, check=False)
        story.say(
            f"applying examples/canary (Services, VirtualService) and examples/analysis into {NAMESPACE}"
        )
        for path in ("canary/services.yaml", "canary/virtualservice.yaml"):
            sandbox.kubectl("-n", NAMESPACE, "apply", "-f", str(examples / path))
        for doc in _load(examples / "analysis" / "success-rate.yaml"):
            for metric in doc["spec"]["metrics"]:
                metric["provider"]["prometheus"]["address"] = address(sandbox)
            sandbox.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=yaml.safe_dump(doc))
        rollout = _load(examples / "analysis" / "rollout.yaml")[0]
        sandbox.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=yaml.safe_dump(rollout))
        _follow(sandbox, "web", {"Healthy"}, 120, False, story)
        story.say(
            "version 1.0 is Healthy: 4 pods on kwok nodes, each backed by a demo app that Prometheus scrapes"
        )

        story.say("rolling out version 2.0 (healthy): 25% -> analysis -> 50% -> analysis -> 100%")
        good = yaml.safe_load(yaml.safe_dump(rollout))
        good["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/web:2.0"
        sandbox.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=yaml.safe_dump(good))
        st = _follow(sandbox, "web", {"Healthy", "Degraded"}, 240, live, story)
        if st.get("phase") != "Healthy":
            raise click.ClickException(f"the good version did not become Healthy: {st.get('message')}")
        story.say("version 2.0 promoted: every analysis run passed, all traffic on it")

        story.say("rolling out version 3.0 with 25% errors: analysis should abort it")
        bad = yaml.safe_load(yaml.safe_dump(good))
        bad["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/web:3.0"
        bad["spec"]["template"]["metadata"]["annotations"]["demo.tidegate.io/error-rate"] = "0.25"
        sandbox.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=yaml.safe_dump(bad))
        st = _follow(sandbox, "web", {"Degraded", "Healthy"}, 240, live, story)
        if st.get("phase") != "Degraded":
            raise click.ClickException("the bad version was not aborted")
        story.say(f"version 3.0 aborted by analysis: {st.get('message')}")
        ok = True
    finally:
        click.echo("")
        click.echo(click.style("What happened", bold=True))
        for line in story.lines:
            click.echo(f"  {line}")
        if keep and ok:
            click.echo("")
            click.echo("Everything is still running. Try it by hand:")
            click.echo('  eval "$(.venv/bin/tidegate sandbox env)"')
            click.echo(f"  .venv/bin/tidegate get rollout web -n {NAMESPACE} --watch")
            click.echo(f"  .venv/bin/tidegate set image web -n {NAMESPACE} web=registry.example/web:4.0")
            click.echo(f"  .venv/bin/tidegate promote web -n {NAMESPACE}   # or abort, retry, undo")
            click.echo(
                "  .venv/bin/tidegate sandbox down                  # stops everything, operator included"
            )
        else:
            if operator is not None:
                operator.terminate()
                try:
                    operator.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    operator.kill()
            sandbox.down(log=lambda m: click.echo(f"  {m}"))
            click.echo(
                "Nothing left running. `make demo KEEP=1` keeps the sandbox and operator up to play with."
            )


@click.command("demo")
@click.option("--keep", is_flag=True, help="Leave the sandbox and the operator running afterwards.")
@click.option("--live/--no-live", default=None, help="Live view (default: when stdout is a terminal).")
def command(keep: bool, live: bool | None) -> None:
    """Run the demo: a canary promoted step by step, then a bad version aborted by analysis.

    \b
    Example:
      make demo
      tidegate demo --keep
    """
    run(keep, sys.stdout.isatty() if live is None else live)


if __name__ == "__main__":
    command()
