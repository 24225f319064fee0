"""Provenance of a run: machine, packages, commit and a hash of the sources measured."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("losses", "backends", "conformance")
PACKAGES = ("numpy", "ml_dtypes", "torch", "tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib", "optax")


def environment_id(device: str) -> str:
    """Return the results folder name for this kind of machine, such as linux-x86_64-cpu-2cores."""
    return f"{platform.system().lower()}-{platform.machine()}-{device}-{os.cpu_count()}cores"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *SOURCE_FOLDERS], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return result.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def source_hash() -> str:
    """Return the SHA-256 of the spec, backend and harness sources, so a stale table can be recognised."""
    digest = hashlib.sha256()
    for folder in SOURCE_FOLDERS:
        for path in sorted((PROJECT_ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def describe(device: str) -> dict:
    return {
        "environment_id": environment_id(device),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "packages": package_versions(),
        "commit": git_commit(),
        "source_sha256": source_hash(),
    }
