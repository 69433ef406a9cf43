"""How long the CLI takes to answer, side by side with kubectl.

    .venv/bin/python bench/cli_startup.py [--runs 15] [--json] [--kubeconfig PATH] [--tree DIR]

Wall time of whole processes, started as a user starts them (the installed console
script, no warm interpreter), each run alternating between the commands so that load
from elsewhere on the machine falls on all of them alike:

- `tidegate --help` (no cluster);
- `tidegate list rollouts -A`, `tidegate get rollout web` (the live view's one-shot
  form: the Rollout, its ReplicaSets, pods and AnalysisRuns), `tidegate get rollout web
  -o yaml`;
- `kubectl get rollouts.tidegate.io -A` and `kubectl get rollouts.tidegate.io web -o yaml`,
  the same reads by kubectl.

Without --kubeconfig it starts its own sandbox (a temporary directory, no Prometheus)
and creates the Rollout `web` of examples/canary/ (no operator needed: the reads are
what is timed). Prints the wall time's median, p90 and min per command, and the median
CPU time (user + system), which load from elsewhere on a shared machine moves far less
than wall time; `--json` for rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


Command = tuple[list[str], dict[str, str]]
"""argv, and environment variables on top of the run's."""


def commands(kubectl: str, tree: str | None) -> dict[str, Command]:
    """What is timed; with `tree`, that checkout's CLI as well (`python -m`, its operator/ on PYTHONPATH)."""
    tidegate = [str(BIN / "tidegate")]
    reads = {
        "--help": ["--help"],
        "list rollouts -A": ["list", "rollouts", "-A"],
        "get rollout web": ["get", "rollout", "web"],
        "get rollout web -o yaml": ["get", "rollout", "web", "-o", "yaml"],
    }
    table: dict[str, Command] = {}
    for name, args in reads.items():
        table[f"tidegate {name}"] = ([*tidegate, *args], {})
        if tree is not None:
            old = Path(tree) / "operator"
            if "-o" in args and not (old / "tidegate" / "cli" / "_output.py").exists():
                continue  # a checkout from before `get -o`
            table[f"tidegate {name} [{Path(tree).name}]"] = (
                [sys.executable, "-m", "tidegate.cli.main", *args],
                {"PYTHONPATH": str(old)},
            )
    table["kubectl get rollouts.tidegate.io -A"] = ([kubectl, "get", "rollouts.tidegate.io", "-A"], {})
    table["kubectl get rollouts.tidegate.io web -o yaml"] = (
        [kubectl, "get", "rollouts.tidegate.io", "web", "-o", "yaml"],
        {},
    )
    return table


def warm(argv: list[str], env: dict[str, str], deadline_s: float = 60.0) -> None:
    """Run until it succeeds once (a fresh sandbox answers 'storage is (re)initializing' for a while)."""
    deadline = time.monotonic() + deadline_s
    while True:
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{' '.join(argv)} still fails after {deadline_s:.0f}s: {done.stderr.strip()}")
        time.sleep(1)


def time_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+system) of one run of `argv`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


@contextlib.contextmanager
def own_sandbox() -> Iterator[tuple[str, str]]:
    """(kubeconfig, kubectl) of a fresh sandbox holding examples/canary/'s Rollout."""
    sys.path.insert(0, str(ROOT / "operator"))
    from tidegate.sandbox import Sandbox

    directory = Path(tempfile.mkdtemp(prefix="tidegate-bench-cli-"))
    os.rmdir(directory)
    sandbox = Sandbox(directory)
    sandbox.up(prometheus=False, log=lambda m: print(m, file=sys.stderr))
    try:
        sandbox.kubectl("apply", "-f", str(ROOT / "examples" / "canary" / "rollout.yaml"))
        yield str(sandbox.kubeconfig), str(sandbox.kubectl_dir() / "kubectl")
    finally:
        sandbox.down(log=lambda _m: None)


def measure(kubeconfig: str, kubectl: str, runs: int, tree: str | None = None) -> list[dict[str, object]]:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    table = commands(kubectl, tree)
    for argv, extra in table.values():  # once each, not counted: the page cache, a fresh API server's CRDs
        warm(argv, {**env, **extra})
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in table}
    for _ in range(runs):  # interleaved: load from elsewhere falls on every command alike
        for name, (argv, extra) in table.items():
            samples[name].append(time_once(argv, {**env, **extra}))
    rows: list[dict[str, object]] = []
    for name, values in samples.items():
        ordered = sorted(wall for wall, _cpu in values)
        rows.append(
            {
                "command": name,
                "runs": len(values),
                "median_s": round(statistics.median(ordered), 3),
                "p90_s": round(ordered[max(0, int(len(ordered) * 0.9) - 1)], 3),
                "min_s": round(ordered[0], 3),
                "cpu_median_s": round(statistics.median(cpu for _wall, cpu in values), 3),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--kubeconfig", help="an existing cluster with a Rollout `web` in its namespace")
    parser.add_argument("--kubectl", default="kubectl", help="with --kubeconfig: the kubectl to compare with")
    parser.add_argument(
        "--tree",
        help="also time the CLI of another checkout, interleaved (its operator/ on PYTHONPATH, run as "
        "python -m), e.g. from `git archive REV operator | tar -x -C DIR`: before/after on one machine",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.kubeconfig:
        rows = measure(args.kubeconfig, args.kubectl, args.runs, args.tree)
    else:
        with own_sandbox() as (kubeconfig, kubectl):
            rows = measure(kubeconfig, kubectl, args.runs, args.tree)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'command':<54} {'median':>8} {'p90':>8} {'min':>8} {'cpu':>8}"
        f"   ({rows[0]['runs']} runs each, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})"
    )
    for row in rows:
        print(
            f"{row['command']:<54} {row['median_s']:>7.3f}s {row['p90_s']:>7.3f}s {row['min_s']:>7.3f}s"
            f" {row['cpu_median_s']:>7.3f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
