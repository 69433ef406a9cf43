"""The operator's Dockerfile and requirements.lock, checked as text (no Docker engine needed).

Run as a script to rewrite requirements.lock from the virtualenv's installed versions:

    .venv/bin/python tests/unit/test_dockerfile.py --write-lock
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
DOCKERIGNORE = ROOT / ".dockerignore"

# The image's platform, for evaluating dependency markers (both architectures we build).
TARGET_ENVIRONMENTS = [
    {
        "python_version": "3.11",
        "python_full_version": "3.11.15",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": machine,
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    for machine in ("x86_64", "aarch64")
]
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|[a-z0-9.+-]+-dev|rustc|cargo)\b")


# -- parsing -----------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        result.append(Instruction(keyword.upper(), " ".join(args.split())))
    assert not pending, "dangling line continuation at the end of the Dockerfile"
    return result


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, FROM arguments expanded."""
    args: dict[str, str] = {}
    found: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "ARG" and not found:
            key, _, default = instruction.args.partition("=")
            args[key] = default
        elif instruction.keyword == "FROM":
            words = instruction.args.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(base, name))
        else:
            assert found or instruction.keyword in ("ARG",), f"{instruction.keyword} before FROM"
            if found:
                found[-1].instructions.append(instruction)
    return args, found


@pytest.fixture(scope="module")
def parsed() -> list[Stage]:
    return stages(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="module")
def final(parsed: list[Stage]) -> Stage:
    return parsed[-1]


def lock_entries(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", line)
        assert match, f"requirements.lock: {raw!r} is not pinned as name==version"
        name = canonicalize_name(match.group(1))
        assert name not in entries, f"requirements.lock lists {name} twice"
        entries[name] = match.group(2)
    return entries


def runtime_dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(spec) for spec in project["dependencies"]]


def runtime_closure() -> dict[str, set[str]]:
    """Every package the runtime dependencies need on the image's platforms -> who needs it.

    Read from the installed distributions' metadata (the virtualenv has them all).
    """
    via: dict[str, set[str]] = {}
    for env in TARGET_ENVIRONMENTS:
        todo = [(req, "pyproject.toml") for req in runtime_dependencies()]
        while todo:
            req, parent = todo.pop()
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = canonicalize_name(req.name)
            seen = name in via
            via.setdefault(name, set()).add(parent)
            if seen:
                continue
            for spec in importlib.metadata.requires(req.name) or []:
                todo.append((Requirement(spec), name))
    return via


def render_lock() -> str:
    lines = LOCK.read_text().split("\n\n", 1)[0].rstrip("\n").splitlines() if LOCK.exists() else []
    lines.append("")
    for name, parents in sorted(runtime_closure().items()):
        lines.append(f"{name}=={importlib.metadata.version(name)}")
        lines.append("    # via " + ", ".join(sorted(parents)))
    return "\n".join(lines) + "\n"


# -- base image and stages -----------------------------------------------------------------


def test_every_base_image_is_pinned_by_full_version(parsed: list[Stage]) -> None:
    for stage in parsed:
        assert stage.base.count(":") == 1 or "@sha256:" in stage.base, f"{stage.base} has no tag"
        image, _, tag = stage.base.partition("@")[0].partition(":")
        assert "latest" not in stage.base.lower()
        assert "/" not in image or not image.split("/")[0].count("."), "no registry host in the base image"
        assert re.match(r"\d+\.\d+\.\d+-slim", tag), f"{stage.base}: pin a full X.Y.Z version of a slim image"


def test_the_build_is_multi_stage_and_the_final_stage_copies_only_the_venv(
    parsed: list[Stage], final: Stage
) -> None:
    assert len(parsed) >= 2
    builder = parsed[0]
    assert builder.name == "builder"
    assert final.name is None or final.name != "builder"
    copies = final.all("COPY")
    assert copies, "the final stage copies the virtualenv from the builder"
    for copy in copies:
        assert copy.startswith("--from=builder "), f"final stage copies from the build context: {copy}"
    assert final.all("RUN") == [], "nothing is installed or built in the final stage"


def test_no_build_tools_in_the_final_stage(final: Stage) -> None:
    for instruction in final.instructions:
        if instruction.keyword in ("RUN", "COPY", "ADD"):
            assert not BUILD_TOOLS.search(instruction.args), instruction


def test_the_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage sets USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, "USER is numeric (runAsNonRoot can verify it) and not root"
    assert not group or (group.isdigit() and int(group) != 0)
    assert user == "65532", "the chart and kustomize base run as 65532; keep them in step"


def test_the_final_stage_needs_no_writable_path_but_tmp(final: Stage) -> None:
    env = " ".join(final.all("ENV"))
    assert "HOME=/tmp" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert all(path in ("/tmp", "/tmp/") for path in final.all("WORKDIR"))
    assert final.all("VOLUME") == [], "a VOLUME would be writable outside /tmp"


def test_entrypoint_and_port(final: Stage) -> None:
    (entrypoint,) = final.all("ENTRYPOINT")
    assert entrypoint.startswith("["), "exec form, so signals reach the operator (kopf stops cleanly)"
    assert shlex.split(entrypoint.strip("[]").replace(",", " ")) == ["tidegate", "operator"]
    assert "8080" in " ".join(final.all("EXPOSE")).split()


# -- requirements.lock -----------------------------------------------------------------------


def test_the_builder_installs_the_lock_without_resolving(parsed: list[Stage]) -> None:
    builder = parsed[0]
    runs = builder.all("RUN")
    lock_install = [r for r in runs if "pip install" in r and "requirements.lock" in r]
    assert lock_install, "the builder installs requirements.lock"
    assert "--no-deps" in lock_install[0]
    package_install = [r for r in runs if "pip install" in r and r not in lock_install]
    assert package_install and all("--no-deps" in r for r in package_install)
    assert any("pip check" in r for r in runs), "pip check proves the lock is a complete closure"
    copied = " ".join(builder.all("COPY"))
    assert "requirements.lock" in copied


def test_the_lock_pins_every_entry() -> None:
    entries = lock_entries(LOCK.read_text())
    assert len(entries) >= len(runtime_dependencies())


def test_the_lock_satisfies_the_declared_dependencies() -> None:
    entries = lock_entries(LOCK.read_text())
    for requirement in runtime_dependencies():
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} is a runtime dependency but not in requirements.lock"
        assert Version(entries[name]) in requirement.specifier, f"{name}=={entries[name]} vs {requirement}"


def test_the_lock_is_the_complete_runtime_closure_and_nothing_else() -> None:
    entries = set(lock_entries(LOCK.read_text()))
    closure = set(runtime_closure())
    assert closure - entries == set(), "missing from requirements.lock (rewrite it: see the docstring)"
    extra = entries - closure
    assert extra == set(), "not needed at run time (dev tools stay out of the image)"
    for dev_tool in ("pytest", "ruff", "mypy", "import-linter"):
        assert dev_tool not in entries


# -- build context ---------------------------------------------------------------------------


def copied_sources(parsed: list[Stage]) -> list[str]:
    sources: list[str] = []
    for stage in parsed:
        for copy in stage.all("COPY"):
            words = [w for w in copy.split() if not w.startswith("--")]
            if not copy.startswith("--from="):
                sources.extend(words[:-1])
    return sources


@pytest.mark.parametrize("source", copied_sources(stages(DOCKERFILE.read_text())[1]))
def test_copied_sources_exist_and_are_in_the_build_context(source: str) -> None:
    path = ROOT / source
    assert path.exists(), f"COPY {source}: no such file in the repository"
    allowed = [line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    top = source.split("/")[0]
    assert top in allowed, f".dockerignore keeps {source} out of the build context"


def test_dockerignore_starts_from_nothing() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "ignore everything, then allow what the image needs (no .venv, .git)"
    for never in (".venv", ".git", "tests", "charts", "deploy"):
        assert f"!{never}" not in patterns


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-lock"]:
        LOCK.write_text(render_lock())
        print(f"wrote {LOCK}")
    else:
        sys.exit("usage: python tests/unit/test_dockerfile.py --write-lock")
