"""Provenance of a run: machine, packages, commit and a hash of the sources measured."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("losses", "backends", "conformance")
PACKAGES = ("numpy", "ml_dtypes", "torch", "tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib", "optax")


def environment_id(device: str, tf32: bool = False) -> str:
    """Return the results folder name for this kind of machine, such as linux-x86_64-cpu-2cores.

    A GPU run names the GPU model too (linux-x86_64-gpu-h200-16cores), so runs on
    two GPU models never share a folder. The TF32 tier gets the suffix -tf32, so
    its tables never replace the correctness tier's.
    """
    model = gpu_model_slug(gpu_model()) if device == "gpu" else ""
    device_part = f"{device}-{model}" if model else device
    suffix = "-tf32" if tf32 else ""
    return f"{platform.system().lower()}-{platform.machine()}-{device_part}-{os.cpu_count()}cores{suffix}"


def gpu_model() -> str | None:
    """Return the first NVIDIA GPU's model name as the driver reports it, or None when no NVIDIA driver is found.

    The driver's /proc file and nvidia-smi need no framework import, so the parent
    process and conformance/gpu_check.sh can name the folder before any worker starts.
    """
    for information in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in information.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model" and value.strip():
                return value.strip()
    if shutil.which("nvidia-smi"):
        try:
            completed = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        names = completed.stdout.strip().splitlines() if completed.returncode == 0 else []
        return names[0].strip() if names else None
    return None


def gpu_model_slug(model: str | None) -> str:
    """Shorten a GPU model name for a folder name: "NVIDIA H200" becomes "h200"; None becomes ""."""
    if not model:
        return ""
    words = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-").split("-")
    return "-".join(word for word in words if word not in ("nvidia", "geforce", "tesla"))


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


def describe(device: str, tf32: bool = False) -> dict:
    return {
        "environment_id": environment_id(device, tf32),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "packages": package_versions(),
        "commit": git_commit(),
        "source_sha256": source_hash(),
    }
