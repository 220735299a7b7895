"""A single-node Kubernetes 1.20 control plane on loopback, started and stopped by the tests.

Processes (each started here, recorded by PID, stopped by PID): dockerd (with its own
containerd), etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet. All
state lives under one run directory; every port is a free loopback port; nothing listens
on or talks to a non-loopback address. Two machine quirks (FIELD-NOTES, "A real
Kubernetes on these machines"):

1. no CAP_SYS_RESOURCE: the kubelet gives pod sandboxes ``oom_score_adj=-998`` and runc
   then fails. Docker runs containers through ``runtime-wrapper`` (written here), which
   clamps a negative ``process.oomScoreAdj`` in the bundle's config.json to 0 and execs
   runc.
2. no pod network: dockerd runs with ``--bridge=none``; pods must use ``hostNetwork``
   (the tests add it with a Helm post-renderer) and reach the test databases on 127.0.0.1.
   ``kubectl logs`` cannot work (the node's address is loopback): read pod status from
   the API and container output with ``docker logs``.

``Cluster.stop()`` deletes every container, stops the processes in reverse order (SIGTERM,
then SIGKILL after a grace period), kills any process still running from the run
directory (containerd shims), unmounts whatever is mounted below it, and removes it. It is
idempotent and runs from ``atexit`` and SIGTERM/SIGINT handlers too, so an interrupted run
leaves no daemon and no mount behind.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import provision  # noqa: E402

PAUSE_IMAGE = "k8s.gcr.io/pause:3.2"
BASE_IMAGE = "migrategate-e2e/base"

RUNTIME_WRAPPER = r'''#!/usr/bin/python3
"""runc with a negative process.oomScoreAdj clamped to 0 (this sandbox lacks CAP_SYS_RESOURCE)."""
import json, os, sys
args = sys.argv[1:]
bundle = None
for i, a in enumerate(args):
    if a in ("--bundle", "-b") and i + 1 < len(args):
        bundle = args[i + 1]
    elif a.startswith("--bundle="):
        bundle = a.split("=", 1)[1]
if bundle and "create" in args or bundle and "run" in args:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path) as fh:
            spec = json.load(fh)
        proc = spec.get("process") or {}
        if proc.get("oomScoreAdj", 0) < 0:
            proc["oomScoreAdj"] = 0
            with open(path + ".tmp", "w") as fh:
                json.dump(spec, fh)
            os.replace(path + ".tmp", path)
    except FileNotFoundError:
        pass
os.execv("%(runc)s", ["runc"] + args)
'''


class ClusterError(RuntimeError):
    """The cluster could not start; the message says which component and shows its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class Cluster:
    """Start with ``Cluster.start(paths)``; ``stop()`` always, even after a failure."""

    paths: Dict[str, Path]
    run: Path = field(default_factory=Path)
    procs: List[Proc] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    ports: Dict[str, int] = field(default_factory=dict)
    _stopped: bool = False

    # ------------------------------------------------------------------ helpers

    @property
    def docker_host(self) -> str:
        return f"unix://{self.run / 'docker.sock'}"

    @property
    def api(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        return self.run / "kubeconfig"

    def docker(self, *args: str, check: bool = True, timeout: float = 300,
               input: Optional[bytes] = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(["/usr/bin/docker", "-H", self.docker_host, *args],
                              capture_output=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise ClusterError(f"docker {' '.join(args[:3])} failed: "
                               f"{proc.stderr.decode(errors='replace')[-2000:]}")
        return proc

    def _spawn(self, name: str, cmd: List[str], env: Optional[dict] = None) -> Proc:
        log = self.run / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "ab")
        popen = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=dict(os.environ, **(env or {})),
                                 start_new_session=True)
        fh.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def _wait(self, proc: Proc, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise ClusterError(f"{proc.name} exited {proc.popen.returncode} before {what}; "
                                   f"log {proc.log}:\n{_tail(proc.log)}")
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ssl.SSLError, ValueError):
                pass
            time.sleep(0.25)
        raise ClusterError(f"{proc.name} not {what} after {timeout:.0f}s; log {proc.log}:\n"
                           f"{_tail(proc.log)}")

    # ------------------------------------------------------------------ API client

    def request(self, method: str, path: str, body: Optional[dict] = None,
                timeout: float = 30) -> Tuple[int, Any]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the apiserver's self-signed loopback certificate
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
                raw = resp.read()
                try:
                    return resp.status, json.loads(raw) if raw else None
                except ValueError:  # /readyz answers "ok"
                    return resp.status, raw.decode(errors="replace")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise ClusterError(f"GET {path}: {status} {body}")
        return body

    # ------------------------------------------------------------------ start

    @classmethod
    def start(cls, paths: Dict[str, Path]) -> "Cluster":
        """One cluster per cache at a time (they share the docker data-root): the lock is
        held until stop(). Leftovers of a run that was killed (SIGKILL skips every
        handler) are reaped first: processes naming this cache's runs/ or docker-data/
        directories, by PID, and mounts below them."""
        root = provision.cache_root()
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / "e2e.lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        _reap_stale(root)
        (root / "runs").mkdir(exist_ok=True)
        cluster = cls(paths, run=Path(tempfile.mkdtemp(prefix="run-", dir=root / "runs")))
        cluster._lock = lock
        _LIVE.append(cluster)
        try:
            cluster._start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _start(self) -> None:
        os.chmod(self.run, 0o755)
        for name in ("etcd", "apiserver", "kubelet", "kubelet_healthz"):
            self.ports[name] = free_port()
        self._certs()
        self._start_docker()
        self._start_etcd()
        self._start_apiserver()
        self._start_controllers()
        self._start_kubelet()
        self._import_images()

    def _certs(self) -> None:
        pki = self.run / "pki"
        pki.mkdir()
        subprocess.run(["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out",
                        str(pki / "sa.pub")], check=True, capture_output=True)
        (pki / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {
                "server": self.api, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}]}))
        os.chmod(self.kubeconfig, 0o600)

    def _start_docker(self) -> None:
        wrapper = self.run / "runtime-wrapper"
        runc = shutil.which("runc") or "/usr/sbin/runc"
        wrapper.write_text(RUNTIME_WRAPPER % {"runc": runc})
        wrapper.chmod(0o755)
        data_root = provision.cache_root() / "docker-data"  # images survive between runs
        data_root.mkdir(parents=True, exist_ok=True)
        proc = self._spawn("dockerd", [
            str(self.paths["dockerd"]), "--iptables=false", "--ip6tables=false",
            "--bridge=none", "--ip-masq=false", "--data-root", str(data_root),
            "--exec-root", str(self.run / "docker-exec"), "--pidfile",
            str(self.run / "docker.pid"), "-H", self.docker_host,
            "--add-runtime", f"e2e={wrapper}", "--default-runtime", "e2e",
            "--storage-driver", self.paths.get("storage_driver", "overlay2"),
            "--exec-opt", "native.cgroupdriver=cgroupfs", "--log-driver", "json-file"])

        def ready() -> bool:
            return self.docker("version", check=False, timeout=10).returncode == 0

        self._wait(proc, ready, 60, "answering")

    def _start_etcd(self) -> None:
        url = f"http://127.0.0.1:{self.ports['etcd']}"
        proc = self._spawn("etcd", [
            str(self.paths["etcd"]), "--data-dir", str(self.run / "etcd"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
            "--unsafe-no-fsync"])

        def ready() -> bool:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                return b"true" in resp.read()

        self._wait(proc, ready, 30, "healthy")

    def _start_apiserver(self) -> None:
        pki = self.run / "pki"
        proc = self._spawn("kube-apiserver", [
            str(self.paths["kubernetes"] / "kube-apiserver"),
            "--etcd-servers", f"http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.ports["apiserver"]), "--insecure-port", "0",
            "--cert-dir", str(pki), "--token-auth-file", str(pki / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-cluster-ip-range", "10.96.0.0/24",  # allocated, never routed to
            "--enable-admission-plugins", "NamespaceLifecycle,ServiceAccount",
            "--endpoint-reconciler-type", "none",  # a loopback endpoint is invalid
            "--allow-privileged=false", "--profiling=false"])

        def ready() -> bool:
            status, body = self.request("GET", "/readyz", timeout=3)
            return status == 200

        self._wait(proc, ready, 90, "ready")

    def _start_controllers(self) -> None:
        pki = self.run / "pki"
        cm = self._spawn("kube-controller-manager", [
            str(self.paths["kubernetes"] / "kube-controller-manager"),
            "--kubeconfig", str(self.kubeconfig), "--port", "0", "--secure-port", "0",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "apiserver.crt"),
            "--use-service-account-credentials=false", "--leader-elect=false",
            "--controllers", "*,-nodeipam,-service,-route,-cloud-node-lifecycle",
            "--concurrent-gc-syncs", "5", "--profiling=false"])
        sched = self._spawn("kube-scheduler", [
            str(self.paths["kubernetes"] / "kube-scheduler"),
            "--kubeconfig", str(self.kubeconfig), "--port", "0", "--secure-port", "0",
            "--leader-elect=false", "--profiling=false"])
        # the ServiceAccount admission needs the namespace's default account
        self._wait(cm, lambda: bool(self.request(
            "GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200),
            60, "creating the default service account")
        self._wait(sched, lambda: True, 1, "running")

    def _start_kubelet(self) -> None:
        root = self.run / "kubelet"
        root.mkdir()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": "127.0.0.1", "port": self.ports["kubelet"], "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.ports["kubelet_healthz"],
            "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "syncFrequency": "2s",
            "fileCheckFrequency": "2s", "nodeStatusUpdateFrequency": "4s",
            "resolvConf": "/etc/resolv.conf",
        }
        (self.run / "kubelet.yaml").write_text(json.dumps(config))
        proc = self._spawn("kubelet", [
            str(self.paths["kubernetes"] / "kubelet"),
            "--config", str(self.run / "kubelet.yaml"), "--kubeconfig", str(self.kubeconfig),
            "--root-dir", str(root), "--cert-dir", str(root / "pki"),
            "--hostname-override", "e2e-node", "--node-ip", "127.0.0.1",
            "--container-runtime", "docker", "--docker-endpoint", self.docker_host,
            "--pod-infra-container-image", PAUSE_IMAGE, "--image-pull-progress-deadline", "10m",
            "--network-plugin", "", "--register-node=true", "--v", "1"])

        def ready() -> bool:
            status, node = self.request("GET", "/api/v1/nodes/e2e-node", timeout=3)
            if status != 200:
                return False
            conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            return conds.get("Ready") == "True"

        self._wait(proc, ready, 120, "Ready")

    # ------------------------------------------------------------------ images

    def _import_images(self) -> None:
        """pause and the base image, imported once into the cached docker data-root."""
        if self.docker("image", "inspect", PAUSE_IMAGE, check=False).returncode != 0:
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copy2(self.paths["pause"], Path(tmp) / "pause")
                tar = subprocess.run(["tar", "-C", tmp, "-c", "pause"], capture_output=True,
                                     check=True).stdout
            self.docker("import", "--change", 'ENTRYPOINT ["/pause"]', "-", PAUSE_IMAGE,
                        input=tar)
        tag = f"{BASE_IMAGE}:{self.paths['rootfs'].parent.name}"
        if self.docker("image", "inspect", tag, check=False).returncode != 0:
            with open(self.paths["rootfs"], "rb") as fh:
                subprocess.run(["/usr/bin/docker", "-H", self.docker_host, "import", "-", tag],
                               stdin=fh, check=True, capture_output=True, timeout=600)
        self.base_image = tag

    def build_image(self, name: str, files: Dict[str, Path], user: str = "") -> str:
        """``base`` + files (image path -> host path) as ``name``; USER ``user`` if given."""
        cid = self.docker("create", self.base_image, "/bin/true").stdout.decode().strip()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for dest, src in files.items():  # staged at their full path, copied to /
                    stage = Path(tmp) / dest.lstrip("/")
                    stage.parent.mkdir(parents=True, exist_ok=True)
                    if Path(src).is_dir():
                        shutil.copytree(src, stage, ignore=shutil.ignore_patterns(
                            "__pycache__", "*.pyc"))
                    else:
                        shutil.copy2(src, stage)
                tops = sorted({d.lstrip("/").split("/")[0] for d in files})
                tar = subprocess.run(["tar", "--owner=0", "--group=0", "-C", tmp, "-c", *tops],
                                     capture_output=True, check=True).stdout
            self.docker("cp", "-", f"{cid}:/", input=tar)
            changes = ["--change", f"USER {user}"] if user else []
            self.docker("commit", *changes, cid, name)
        finally:
            self.docker("rm", "-f", cid, check=False)
        return name

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        by_name = {p.name: p for p in self.procs}
        kubelet = by_name.get("kubelet")
        if kubelet:
            _terminate(kubelet.popen)
        if by_name.get("dockerd") and by_name["dockerd"].popen.poll() is None:
            ids = self.docker("ps", "-aq", check=False, timeout=60).stdout.decode().split()
            if ids:
                self.docker("rm", "-f", "-v", *ids, check=False, timeout=120)
            # the images this run re-tagged leave their predecessors dangling
            self.docker("image", "prune", "-f", check=False, timeout=120)
        for proc in reversed(self.procs):
            _terminate(proc.popen)
        _kill_strays(self.run)
        _unmount_below(self.run)
        _unmount_below(provision.cache_root() / "docker-data")
        if os.environ.get("MIGRATEGATE_E2E_KEEP_RUN") != "1":
            shutil.rmtree(self.run, ignore_errors=True)
        if self in _LIVE:
            _LIVE.remove(self)
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()  # releases the flock

    def leftovers(self) -> List[str]:
        """Processes or mounts of this cluster still alive (for the teardown test)."""
        out = [f"pid {p.popen.pid} ({p.name})" for p in self.procs if p.popen.poll() is None]
        out += [f"pid {pid}" for pid in _pids_below(self.run)]
        out += [f"mount {m}" for m in _mounts_below(self.run)]
        out += [f"mount {m}" for m in _mounts_below(provision.cache_root() / "docker-data")]
        return out


def _terminate(popen: subprocess.Popen, grace: float = 20) -> None:
    if popen.poll() is not None:
        return
    popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(timeout=30)


def _pids_below(run: Path) -> List[int]:
    """Processes whose command line names the run directory (e.g. containerd shims)."""
    mine = os.getpid()
    found = []
    needle = str(run).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


LEDGER = "pids"  # cache_root()/runs/pids: "<pid> <marker>" of helpers outside the run dir


def register_helper(pid: int, marker: str) -> None:
    """Record a process this session started outside the run directory (the test
    database): a later session reaps it if this one was SIGKILLed. ``marker`` is a string
    of its command line, checked before killing (a reused PID is left alone)."""
    with open(provision.cache_root() / "runs" / LEDGER, "a") as fh:
        fh.write(f"{pid} {marker}\n")


def _reap_ledger(root: Path) -> None:
    ledger = root / "runs" / LEDGER
    if not ledger.exists():
        return
    for line in ledger.read_text().splitlines():
        pid_text, _, marker = line.partition(" ")
        try:
            cmdline = Path(f"/proc/{int(pid_text)}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if marker and marker.encode() in cmdline:
            print(f"[e2e] stopping pid {pid_text} left by a killed earlier run ({marker})",
                  file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_text), signal.SIGTERM)
    ledger.unlink()


def _reap_stale(root: Path) -> None:
    """Processes and mounts a killed earlier run of this cache left (called under the lock)."""
    _reap_ledger(root)
    stale = [p for p in _pids_below(root / "runs") + _pids_below(root / "docker-data")]
    if stale:
        print(f"[e2e] stopping {len(stale)} process(es) left by a killed earlier run: "
              f"{sorted(set(stale))}", file=sys.stderr)
    _kill_strays(root / "runs")
    _kill_strays(root / "docker-data")
    _unmount_below(root / "runs")
    _unmount_below(root / "docker-data")
    if (root / "runs").exists():
        for old in (root / "runs").iterdir():
            shutil.rmtree(old, ignore_errors=True)


def _kill_strays(run: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids_below(run)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


_mounts_below = provision.mounts_below
_unmount_below = provision.unmount_below


_LIVE: List[Cluster] = []


def _stop_all() -> None:
    for cluster in list(_LIVE):
        cluster.stop()


def _on_signal(signum: int, frame: Any) -> None:
    """SIGTERM/SIGHUP behave like Ctrl-C: pytest stops, fixtures tear the cluster down, a
    running build step kills its process group (provision.run)."""
    signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once
    raise KeyboardInterrupt(f"signal {signum}")


def install_teardown_handlers() -> None:
    atexit.register(_stop_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


if __name__ == "__main__":  # pragma: no cover - manual: start, print, wait for Enter
    install_teardown_handlers()
    c = Cluster.start(provision.ensure_all())
    print(f"KUBECONFIG={c.kubeconfig}  DOCKER_HOST={c.docker_host}")
    try:
        input("cluster up; Enter stops it\n")
    finally:
        c.stop()
