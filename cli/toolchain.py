"""`upscaler doctor`'s offline checks: what `cdk deploy` needs on this machine, before any credentials.

Docker (or the engine `CDK_DOCKER` names) must answer and build linux/amd64 images: the worker image is a
Docker asset that `cdk deploy` builds here. Node.js runs the CDK CLI and jsii; the CDK CLI is the one
package.json pins; Python runs the app. Each check takes a command runner, so tests give it fakes.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cli.findings import Finding, Status

# Node releases jsii supports (it warns on every synth under an end-of-life one); older ones fail.
SUPPORTED_NODE_MAJORS = (22, 24)
MIN_NODE_MAJOR = 18
MIN_PYTHON = (3, 11)
AMD64 = ("x86_64", "amd64")


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


# None: the program is not installed.
Runner = Callable[[Sequence[str]], Completed | None]


def run_command(command: Sequence[str], timeout: float = 30) -> Completed | None:
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        return Completed(124, "", f"{command[0]} did not answer within {timeout:g} s")
    return Completed(done.returncode, done.stdout, done.stderr)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]


def check_docker(run: Runner, environ: Mapping[str, str]) -> Finding:
    docker = environ.get("CDK_DOCKER") or "docker"
    check = f"Docker ({docker})" if docker != "docker" else "Docker"
    version = run([docker, "--version"])
    if version is None or version.returncode != 0:
        return Finding(check, Status.FAIL, f"{docker} is not installed",
                       "install Docker (or set CDK_DOCKER to a compatible CLI such as finch or podman): "
                       "`cdk deploy` builds the worker image with it")
    info = run([docker, "info", "--format", "{{.OSType}}/{{.Architecture}}"])
    if info is None or info.returncode != 0:
        reason = _first_line(info.stderr if info else "") or "no answer"
        return Finding(check, Status.FAIL, f"{_first_line(version.stdout)}, but no engine answers: {reason}",
                       "start the Docker engine (Docker Desktop, or `sudo systemctl start docker`) and make sure "
                       "this user may use it (`docker info` must work)")
    os_type, _, arch = info.stdout.strip().partition("/")
    if arch in AMD64:
        return Finding(check, Status.OK, f"{_first_line(version.stdout)}; engine {os_type}/{arch}")
    buildx = run([docker, "buildx", "ls"])
    if buildx is not None and buildx.returncode == 0 and "linux/amd64" in buildx.stdout:
        return Finding(check, Status.OK, f"engine {os_type}/{arch}, builds linux/amd64 (buildx)")
    return Finding(check, Status.FAIL, f"engine {os_type}/{arch} cannot build linux/amd64 images",
                   "install amd64 emulation (`docker run --privileged --rm tonistiigi/binfmt --install amd64`) "
                   "or deploy from an x86_64 machine")


def check_node(run: Runner) -> Finding:
    done = run(["node", "--version"])
    if done is None or done.returncode != 0:
        return Finding("Node.js", Status.FAIL, "node is not installed",
                       f"install Node.js {SUPPORTED_NODE_MAJORS[0]} or {SUPPORTED_NODE_MAJORS[1]} (LTS)")
    text = done.stdout.strip()
    match = re.match(r"v(\d+)\.", text)
    major = int(match.group(1)) if match else 0
    wanted = " or ".join(str(m) for m in SUPPORTED_NODE_MAJORS)
    if major < MIN_NODE_MAJOR:
        return Finding("Node.js", Status.FAIL, f"{text}: too old for the CDK CLI", f"install Node.js {wanted}")
    if major not in SUPPORTED_NODE_MAJORS and major < max(SUPPORTED_NODE_MAJORS):
        return Finding("Node.js", Status.WARN, f"{text}: end of life, jsii warns on every synth",
                       f"install Node.js {wanted} (LTS)")
    return Finding("Node.js", Status.OK, text)


def check_cdk_cli(run: Runner, root: Path) -> Finding:
    wanted = json.loads((root / "package.json").read_text())["devDependencies"]["aws-cdk"]
    cdk = root / "node_modules" / ".bin" / "cdk"
    done = run([str(cdk), "--version"]) if cdk.exists() else None
    if done is None or done.returncode != 0:
        return Finding("CDK CLI", Status.FAIL, f"{cdk.relative_to(root)} is missing",
                       f"`make setup` (npm install: aws-cdk {wanted} from package.json)")
    version = done.stdout.split()[0] if done.stdout.split() else "?"
    if version != wanted:
        return Finding("CDK CLI", Status.WARN, f"aws-cdk {version}, package.json pins {wanted}", "npm install")
    return Finding("CDK CLI", Status.OK, f"aws-cdk {version} (npx cdk)")


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Finding:
    text = ".".join(map(str, version))
    wanted = ".".join(map(str, MIN_PYTHON))
    if version[:2] < MIN_PYTHON:
        return Finding("Python", Status.FAIL, f"{text} ({sys.executable})", f"use Python {wanted} or newer")
    return Finding("Python", Status.OK, f"{text} ({platform.python_implementation()})")


def offline_checks(root: Path, environ: Mapping[str, str], run: Runner = run_command) -> list[Finding]:
    return [check_docker(run, environ), check_node(run), check_cdk_cli(run, root), check_python()]
