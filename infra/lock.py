"""The lock: uv.lock (every target's packages, pinned, with hashes) and one requirements file per target.

`make lock` (`python -m infra.lock`) re-resolves pyproject.toml into uv.lock and exports, for each target,
the pinned, hashed requirements that `pip install --require-hashes --no-deps` installs:
- requirements/dev.txt: `make setup`'s venv (local + infra + dev);
- requirements/lambda.txt: the Lambda bundle (the `lambda` extra less what the runtime and the Powertools
  layer provide); it is part of the bundle's asset hash, so a new pin makes a new asset;
- requirements/worker.txt: the GPU worker image (the `worker` extra).
tests/infra/test_lock.py checks that uv.lock matches pyproject.toml and each file matches uv.lock.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from infra.config import REPO_ROOT

LOCK_FILE = REPO_ROOT / "uv.lock"
REQUIREMENTS_DIR = REPO_ROOT / "requirements"
# Packages of the `lambda` extra that the function gets from elsewhere, and from where (with what they need).
PROVIDED_BY_LAMBDA = {"aws-lambda-powertools": "the Powertools public layer (infra/constructs/lambdas.py)",
                      "boto3": "the Lambda runtime"}


@dataclass(frozen=True, slots=True)
class Target:
    extras: tuple[str, ...]
    prune: tuple[str, ...] = ()  # left out, with whatever only they need

    def export_arguments(self) -> list[str]:
        return ["export", "--frozen", "--no-emit-project", "--format", "requirements-txt",
                *(arg for extra in self.extras for arg in ("--extra", extra)),
                *(arg for name in self.prune for arg in ("--prune", name))]


TARGETS = {
    "dev": Target(("local", "infra", "dev")),
    "lambda": Target(("lambda",), prune=tuple(PROVIDED_BY_LAMBDA)),
    "worker": Target(("worker",)),
}


def requirements_file(target: str, root: Path = REPO_ROOT) -> Path:
    return root / "requirements" / f"{target}.txt"


def uv_executable() -> str:
    """uv from the venv (the `dev` extra), else from PATH."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if found is None:
        raise FileNotFoundError("uv is not installed: `make setup` installs it (the dev extra)")
    return found


def export(target: str, *, root: Path = REPO_ROOT) -> str:
    """The requirements of one target as uv exports them from the lock (offline: --frozen)."""
    result = subprocess.run([uv_executable(), *TARGETS[target].export_arguments(), "--quiet"], cwd=root,
                            capture_output=True, text=True, check=True, timeout=120)
    return result.stdout


def main() -> int:
    subprocess.run([uv_executable(), "lock", *sys.argv[1:]], cwd=REPO_ROOT, check=True)
    REQUIREMENTS_DIR.mkdir(exist_ok=True)
    for target in TARGETS:
        requirements_file(target).write_text(export(target))
        print(f"wrote {requirements_file(target).relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
