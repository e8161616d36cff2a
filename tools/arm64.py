"""An emulated ARM64 (Jetson CPU architecture) environment for the lean runtime, built and cached.

    python -m edgediff.tools.arm64 build                 # root file system + wheels + this checkout
    python -m edgediff.tools.arm64 run -- verify BUNDLE  # any `edgediff ...` command, on ARM64
    python -m edgediff.tools.arm64 run -- sample BUNDLE --n 4 --out s.npy

How: an ARM64 Debian bookworm root made by ``debootstrap --foreign`` (first stage only, its .deb
files unpacked with ``dpkg -x``), ARM64 wheels fetched with ``pip download --platform``, and
programs run by ``qemu-aarch64-static -L ROOT`` (user-mode emulation, no chroot, no root needed to
run). The stack is JetPack-like where Debian allows: numpy 1.26 and ONNX Runtime; Python is
bookworm's 3.11 (JetPack 6 has 3.10; the runtime's 3.10 syntax is checked separately).
ONNX Runtime under qemu 7.2 (Debian 12): 1.20.1 through 1.27.0 run; 1.28.0 and newer crash with a
segmentation fault at session creation, so 1.27.0 is pinned.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import click

from edgediff.runtime.errors import BackendUnavailableError, EdgediffError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / ".cache" / "arm64"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PYTHON = "python3.11"
WHEELS = ("numpy==1.26.4", "onnxruntime==1.27.0", "click==8.2.1")
TOOLS_HINT = "apt-get install qemu-user-static debootstrap (Debian packages)"
CHECKOUT = ("edgediff", "runtime", "train", "export", "tools", "priors", "pyproject.toml", "README.md")


def tools_missing() -> list[str]:
    return [tool for tool in ("qemu-aarch64-static", "debootstrap", "dpkg") if shutil.which(tool) is None]


def _run(cmd: list[str], **kw: object) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BackendUnavailableError(f"{' '.join(cmd[:3])} ... failed: {' | '.join(tail)}")


def build_root(cache: Path) -> Path:
    """The ARM64 Debian root with Python (cached: built once)."""
    root = cache / "root"
    if (root / "usr" / "bin" / PYTHON).exists():
        return root
    missing = tools_missing()
    if missing:
        raise BackendUnavailableError(f"{', '.join(missing)} not found: {TOOLS_HINT}")
    tmp = cache / "root.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3", SUITE, str(tmp), MIRROR])
    archives = tmp / "var" / "cache" / "apt" / "archives"
    for deb in sorted(archives.glob("*.deb")):  # the second stage would configure; unpacking is enough
        _run(["dpkg", "-x", str(deb), str(tmp)])
        deb.unlink()
    os.replace(tmp, root)
    return root


def fetch_wheels(cache: Path) -> Path:
    """ARM64 wheels of the runtime's dependencies, unpacked into one site directory (cached)."""
    site = cache / "site-deps"
    if (site / ".complete").exists():
        return site
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
          "--implementation", "cp", "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_27_aarch64",
          "--platform", "manylinux_2_28_aarch64", "--platform", "any", "-d", str(wheels), *WHEELS])
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    (site / ".complete").write_text("\n".join(sorted(w.name for w in wheels.glob("*.whl"))) + "\n")
    return site


def checkout_digest() -> str:
    """sha256 over the files the wheel is built from: the checkout as the emulated runtime would see it."""
    digest = hashlib.sha256()
    for name in CHECKOUT:
        top = REPO / name
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in files:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def install_checkout(cache: Path) -> Path:
    """A wheel built from this checkout and unpacked, rebuilt when the checkout has changed since the last build."""
    site, digest = cache / "site-edgediff", checkout_digest()
    stamp = site / ".checkout-sha256"
    if stamp.exists() and stamp.read_text().strip() == digest:
        return site
    dist, src = cache / "dist", cache / "src"
    for path in (dist, src):
        shutil.rmtree(path, ignore_errors=True)
    # build from a copy: setuptools' build/ scratch in the checkout could carry stale modules into the wheel
    for name in CHECKOUT:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)])
    shutil.rmtree(site, ignore_errors=True)
    (wheel,) = dist.glob("edgediff-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    stamp.write_text(digest + "\n")
    return site


def build(cache: Path = DEFAULT_CACHE) -> dict[str, Path]:
    """The environment, built under a lock on the cache: processes that build at once (test workers, two
    shells) take turns, and the later ones find it built instead of rebuilding a tree another one runs from."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return {"root": build_root(cache), "deps": fetch_wheels(cache), "edgediff": install_checkout(cache)}


def command(env: dict[str, Path], args: list[str]) -> tuple[list[str], dict[str, str]]:
    """argv and environment that run ``edgediff ARGS`` on emulated ARM64."""
    root = env["root"]
    # -P: do not put the working directory on sys.path (a checkout there would shadow the wheel)
    argv = ["qemu-aarch64-static", "-L", str(root), str(root / "usr" / "bin" / PYTHON), "-P", "-m", "edgediff", *args]
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(root / "root"), "LANG": "C.UTF-8",
               "PYTHONPATH": f"{env['edgediff']}:{env['deps']}", "PYTHONDONTWRITEBYTECODE": "1"}
    return argv, environ


def run(env: dict[str, Path], args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    argv, environ = command(env, args)
    return subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=timeout)


@click.group()
@click.option("--cache", type=click.Path(path_type=Path), default=DEFAULT_CACHE, show_default=True)
@click.pass_context
def main(ctx: click.Context, cache: Path) -> None:
    """Build and use the emulated ARM64 runtime environment."""
    ctx.obj = cache


@main.command("build")
@click.pass_obj
def build_cmd(cache: Path) -> None:
    env = build(cache)
    click.echo(f"ARM64 root {env['root']}; wheels {', '.join(WHEELS)}; edgediff from {REPO}")


@main.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run_cmd(cache: Path, args: tuple[str, ...]) -> None:
    """Run `edgediff ARGS` on emulated ARM64 (builds the environment first if needed)."""
    proc = run(build(cache), list(args))
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    try:
        main(standalone_mode=False)
    except EdgediffError as exc:
        click.echo(f"edgediff: error: {exc}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
