"""An aarch64 Python 3.11 with the runtime's wheels, run under qemu-user: the Raspberry Pi's software
stack (Pi OS Bookworm: Debian 12 arm64, Python 3.11) on an x86 machine, with no board and no root
filesystem image.

``ensure_sysroot()`` builds it once under ``.cache/arm64`` (git-ignored) and reuses it after:

- ``sysroot/``: Debian bookworm's arm64 ``python3.11`` and its library dependencies, fetched with
  ``apt-get download`` through a private apt state (the machine's own dpkg database and
  architecture list are left untouched) and unpacked with ``dpkg -x``;
- ``site/``: the aarch64 wheels of the runtime's dependencies (LiteRT, numpy, headless OpenCV),
  fetched with the host's pip for ``cp311``/``manylinux_*_aarch64`` and unzipped (no pip runs
  inside the emulator).

``Arm64Env.run()`` then runs Python code there with the working tree importable, so the very
``edge_deblur`` being tested runs on ARM kernels (LiteRT's XNNPACK NEON path, numpy and OpenCV's
aarch64 builds), only emulated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = "python3.11"  # Debian bookworm's, as on Raspberry Pi OS Bookworm
# What goes in the sysroot, with its dependencies: the interpreter, and the C++ runtime that
# manylinux wheels may link against without bundling it (the wheels' only other system library).
ROOT_PACKAGES = (PYTHON, "libstdc++6")
WHEELS = ("ai-edge-litert", "numpy", "opencv-python-headless")  # the runtime's dependencies
# Bookworm has glibc 2.36, so every manylinux_2_N up to 36 installs there. pip matches platform
# tags exactly, so each one is listed: LiteRT 2.x ships only manylinux_2_27 for aarch64.
PLATFORMS = ["manylinux2014_aarch64"] + [f"manylinux_2_{n}_aarch64" for n in range(17, 37)]


class Arm64SetupError(RuntimeError):
    """The emulated environment could not be built (a download or a tool failed)."""


@dataclass(frozen=True)
class Cpu:
    """An ARM core as qemu emulates it and as ``/proc/cpuinfo`` describes it."""

    board: str  # the Raspberry Pi with this core, for test ids
    variant: int
    part: int  # the MIDR part number, which tells the core apart
    revision: int
    features: str  # the board's own ``Features`` line

    def cpuinfo(self, count: int) -> str:
        core = (f"BogoMIPS\t: 108.00\nFeatures\t: {self.features}\nCPU implementer\t: 0x41\n"
                f"CPU architecture: 8\nCPU variant\t: {self.variant:#x}\nCPU part\t: {self.part:#05x}\n"
                f"CPU revision\t: {self.revision}\n\n")
        return "".join(f"processor\t: {i}\n{core}" for i in range(count))


# The qemu CPU models of the Raspberry Pis: the Pi 4's Cortex-A72 has plain NEON, the Pi 5's
# Cortex-A76 adds the dot-product instructions, so XNNPACK runs different INT8 kernels on each.
CPUS = {
    "cortex-a72": Cpu("pi4", 0x0, 0xD08, 3, "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": Cpu("pi5", 0x4, 0xD0B, 1, "fp asimd evtstrm aes pmull sha1 sha2 crc32 "
                      "atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
}


@dataclass(frozen=True)
class Arm64Env:
    """A built emulated environment (see ``ensure_sysroot``)."""

    qemu: str  # path of qemu-aarch64-static
    sysroot: Path  # the arm64 root filesystem
    site: Path  # the unpacked aarch64 wheels
    cache: Path  # cache_dir: also holds a root per CPU model and the emulated Python's bytecode

    @property
    def packages(self) -> list[str]:
        """``name-version`` of each unpacked wheel, for reports."""
        return sorted(p.name.removesuffix(".dist-info") for p in self.site.glob("*.dist-info"))

    def root(self, cpu: str) -> Path:
        """qemu's ``-L`` root for ``cpu``: the sysroot's top-level folders, linked, and a
        ``/proc/cpuinfo`` of that core.

        qemu-user 7.2 (Debian 12's) passes the host's x86 ``/proc/cpuinfo`` through, and the
        cpuinfo library that XNNPACK and ruy use to pick kernels crashes on it (a segfault at the
        first ``allocate_tensors``). qemu looks a path up under ``-L`` first, so this file is read
        instead. One root per CPU model keeps runs on different cores from sharing the file.
        """
        root = self.cache / "roots" / cpu
        info = root / "proc" / "cpuinfo"
        if not info.exists():  # written last: a root without it is an interrupted one
            shutil.rmtree(root, ignore_errors=True)
            info.parent.mkdir(parents=True)
            for entry in self.sysroot.iterdir():
                (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
            info.write_text(CPUS[cpu].cpuinfo(os.cpu_count() or 1))
        return root

    def env(self) -> dict[str, str]:
        """The host environment less its PYTHON* variables, plus the emulated Python's own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(
            PYTHONPATH=os.pathsep.join([str(self.site), str(REPO)]),
            PYTHONNOUSERSITE="1",
            # Bytecode is compiled once under emulation and kept: the stdlib comes without it.
            PYTHONPYCACHEPREFIX=str(self.cache / "pycache"),
        )
        return env

    def run(self, code_or_script: str | Path, *args: str, cpu: str = "cortex-a76",
            timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run Python 3.11 aarch64 code (a ``str``) or script (a ``Path``) with ``args`` under qemu
        emulating ``cpu`` (a key of ``CPUS``).

        stdout and stderr are captured as text; the exit status is not checked, so a test can
        assert on both the status and the messages.
        """
        root = self.root(cpu)
        target = [str(code_or_script)] if isinstance(code_or_script, Path) else ["-c", code_or_script]
        cmd = [self.qemu, "-cpu", cpu, "-L", str(root), str(root / "usr" / "bin" / PYTHON), *target,
               *map(str, args)]
        return subprocess.run(cmd, env=self.env(), cwd=cwd or REPO, capture_output=True, text=True,
                              timeout=timeout)


def _step(message: str) -> None:
    print(f"[arm64] {message}", file=sys.stderr, flush=True)


def _check(cmd: list[str], what: str, **kwargs) -> str:
    """Run a set-up command; its stdout, or an Arm64SetupError saying what could not be done."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as e:
        raise Arm64SetupError(f"{what}: {cmd[0]} not found (the arm64 set-up needs Debian's apt, dpkg "
                              "and the host's pip)") from e
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise Arm64SetupError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n{tail}")
    return result.stdout


def ensure_qemu() -> str:
    """qemu-aarch64-static, installed from Debian's qemu-user-static when missing."""
    found = shutil.which("qemu-aarch64-static")
    if found:
        return found
    _step("installing qemu-user-static with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _check(["apt-get", "update"], "apt-get update", env=env)
    _check(["apt-get", "install", "-y", "--no-install-recommends", "qemu-user-static"],
           "installing qemu-user-static", env=env)
    found = shutil.which("qemu-aarch64-static")
    if not found:
        raise Arm64SetupError("qemu-user-static installed but qemu-aarch64-static is not on PATH")
    return found


def _apt_options(apt_dir: Path) -> list[str]:
    """apt options for an arm64-only package view kept in ``apt_dir``: the host's sources, its own
    package lists and an empty dpkg status, so nothing on the machine changes."""
    state, cache = apt_dir / "state", apt_dir / "cache"
    for d in (state / "lists" / "partial", cache / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    return ["-o", f"Dir::State={state}", "-o", f"Dir::State::status={state / 'status'}",
            "-o", f"Dir::Cache={cache}", "-o", "APT::Architecture=arm64",
            "-o", "APT::Architectures=arm64", "-o", "APT::Sandbox::User=root"]


def _dependency_closure(opts: list[str], packages: tuple[str, ...]) -> list[str]:
    """``packages`` and all they Depend/Pre-Depend on, recursively (virtual names dropped)."""
    out = _check(["apt-cache", *opts, "depends", "--recurse", "--no-recommends", "--no-suggests",
                  "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
                 f"resolving the dependencies of {' '.join(packages)}")
    return sorted({line.strip() for line in out.splitlines() if line and not line[0].isspace()
                   and not line.startswith("<")})


def _build_sysroot(cache: Path, sysroot: Path) -> None:
    opts = _apt_options(cache / "apt")
    _step("fetching Debian's arm64 package lists")
    _check(["apt-get", *opts, "update"], "apt-get update (arm64 lists)")
    packages = _dependency_closure(opts, ROOT_PACKAGES)
    debs = cache / "debs"
    shutil.rmtree(debs, ignore_errors=True)  # no stale versions to unpack over the new ones
    debs.mkdir()
    _step(f"downloading {len(packages)} arm64 packages: {' '.join(packages)}")
    _check(["apt-get", *opts, "download", *packages], "apt-get download (arm64)", cwd=debs)
    partial = sysroot.with_name(sysroot.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for deb in sorted(debs.glob("*_arm64.deb")) + sorted(debs.glob("*_all.deb")):
        _check(["dpkg", "-x", str(deb), str(partial)], f"unpacking {deb.name}")
    if not (partial / "usr" / "bin" / PYTHON).exists():
        raise Arm64SetupError(f"{PYTHON} is missing from the unpacked arm64 packages in {partial}")
    partial.rename(sysroot)


def _build_site(cache: Path, site: Path) -> None:
    wheels = cache / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)  # one wheel per project: the newest pip finds
    _step(f"downloading aarch64 cp311 wheels: {' '.join(WHEELS)}")
    # --no-deps: LiteRT's other requirements (protobuf, tqdm, ml_dtypes...) are not imported by its
    # Interpreter, and the runtime must work without them.
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
           "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3",
           "--dest", str(wheels), *[a for p in PLATFORMS for a in ("--platform", p)], *WHEELS]
    _check(cmd, "pip download (aarch64 wheels)")
    partial = site.with_name(site.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for name in WHEELS:
        whl = _wheel(wheels, name)
        _step(f"unpacking {whl.name}")
        with zipfile.ZipFile(whl) as z:
            z.extractall(partial)
    partial.rename(site)


def _wheel(wheels: Path, project: str) -> Path:
    found = sorted(wheels.glob(project.replace("-", "_") + "-*.whl"))
    if len(found) != 1:
        raise Arm64SetupError(f"expected one aarch64 wheel of {project} in {wheels}, found {[p.name for p in found]}")
    return found[0]


def ensure_sysroot(cache_dir: Path = Path(".cache/arm64")) -> Arm64Env:
    """The emulated environment, built on first use and reused after (delete ``cache_dir`` to
    rebuild it). A relative ``cache_dir`` is taken from the repository root, whose ``/.cache/``
    git ignores."""
    cache = cache_dir if cache_dir.is_absolute() else REPO / cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    qemu = ensure_qemu()
    sysroot, site = cache / "sysroot", cache / "site"
    if not sysroot.is_dir():
        _build_sysroot(cache, sysroot)
    if not site.is_dir():
        _build_site(cache, site)
    return Arm64Env(qemu, sysroot, site, cache)
