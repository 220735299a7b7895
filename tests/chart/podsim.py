"""Run a rendered container as a local process, the way the kubelet would set it up.

Given the manifests ``helm template`` rendered (plus any "pre-existing" objects a test
supplies, e.g. an application's Secret) and one pod spec, ``Pod`` builds:

* a root directory per container, standing in for its filesystem: every absolute path
  in the container's env and args is re-rooted there;
* the pod's volumes: ``emptyDir`` as empty directories, ``configMap``/``secret`` as files
  written from the rendered objects' data (honouring ``items``, ``defaultMode``, ``subPath``),
  linked at each ``volumeMount``'s ``mountPath``;
* the "image": directories the test says the image contains (e.g. migrations);
* the environment: ``envFrom``, then ``env`` in order, with ``$(VAR)`` expansion,
  ``secretKeyRef``/``configMapKeyRef`` resolved from the objects (a missing key fails like
  CreateContainerConfigError), ``fieldRef`` from fake pod metadata;
* the termination message file at ``terminationMessagePath`` (read back after exit, with
  the ``FallbackToLogsOnError`` rule applied).

The container's command runs as written, except that the image's Python is replaced by
this interpreter (``python=``) and ``PATH`` is the host's with this venv's ``bin`` first
(so ``code.source=image``'s ``migrategate`` is this venv's console script).

What it does NOT simulate — the real-cluster tier (tests/e2e, a Kubernetes 1.20 started
on loopback) covers these, and the podsim tests that only repeated its ground were
retired (fresh Job, rerun, failing revision, unreachable database, password file):

* the user: the process runs as the test's user (root), not the pod's ``runAsUser`` /
  ``fsGroup``; ``runAsNonRoot`` and a named image ``USER`` are not checked (the kubelet's
  CreateContainerConfigError "non-numeric user" cannot happen here);
* the filesystem: there is no image and no read-only root; paths are re-rooted under a
  host directory the process could write to, ``readOnly`` mounts are not enforced, and
  file modes are set but not checked against the (absent) uid;
* the rest of ``securityContext`` (capabilities, seccomp, no-new-privileges) and
  ``resources``;
* the Job controller (retries, ``backoffLimit``, ``podFailurePolicy``, deadlines) and
  the kubelet's ordering and restarts of initContainers: a test starts each container
  itself, in the order it chooses;
* the network: the process shares the host's, as the e2e tier's ``hostNetwork`` pods do;
  Services and DNS do not exist.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional


class PodSetupError(RuntimeError):
    """What the kubelet would report before the container starts (missing Secret key...)."""


@dataclass
class Outcome:
    exit_code: int
    logs: str
    termination_message: str
    seconds: float

    def __repr__(self) -> str:  # shown by pytest on a failed assert
        return (f"Outcome(exit_code={self.exit_code}, seconds={self.seconds:.1f}, "
                f"termination_message={self.termination_message!r},\nlogs=\n{self.logs})")


def pod_spec_of(obj: Mapping) -> Dict:
    """The pod spec of a Job/Deployment/StatefulSet/Pod manifest."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    raise ValueError(f"no pod spec in a {kind}")


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined vars are replaced, undefined stay, $$ -> $."""

    def sub(m: "re.Match[str]") -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR.sub(sub, value)


@dataclass
class Pod:
    objects: List[Dict]
    spec: Dict
    workdir: Path
    name: str = "pod-0"
    namespace: str = "default"
    image_files: Mapping[str, Path] = field(default_factory=dict)
    python: str = sys.executable
    image_python: Optional[str] = None  # the command word replaced by ``python``

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._volumes: Dict[str, Path] = {}
        self._build_volumes()

    # ------------------------------------------------------------------ objects

    def _find(self, kind: str, name: str) -> Optional[Dict]:
        for obj in self.objects:
            if obj and obj.get("kind") == kind and obj["metadata"]["name"] == name:
                return obj
        return None

    @staticmethod
    def _data(obj: Dict) -> Dict[str, bytes]:
        out: Dict[str, bytes] = {}
        if obj["kind"] == "Secret":
            for k, v in (obj.get("data") or {}).items():
                out[k] = base64.b64decode(v)
            for k, v in (obj.get("stringData") or {}).items():
                out[k] = str(v).encode()
        else:
            for k, v in (obj.get("data") or {}).items():
                out[k] = str(v).encode()
            for k, v in (obj.get("binaryData") or {}).items():
                out[k] = base64.b64decode(v)
        return out

    def _key(self, kind: str, ref: Mapping, what: str) -> Optional[bytes]:
        obj = self._find(kind, ref["name"])
        optional = bool(ref.get("optional"))
        if obj is None:
            if optional:
                return None
            raise PodSetupError(f"CreateContainerConfigError: {kind.lower()} "
                                f"{ref['name']!r} not found ({what})")
        data = self._data(obj)
        if ref["key"] not in data:
            if optional:
                return None
            raise PodSetupError(f"CreateContainerConfigError: couldn't find key {ref['key']} "
                                f"in {kind} {ref['name']} ({what})")
        return data[ref["key"]]

    # ------------------------------------------------------------------ volumes

    def _build_volumes(self) -> None:
        base = self.workdir / "volumes"
        for vol in self.spec.get("volumes") or []:
            path = base / vol["name"]
            path.mkdir(parents=True)
            if "emptyDir" in vol:
                pass
            elif "configMap" in vol or "secret" in vol:
                kind = "ConfigMap" if "configMap" in vol else "Secret"
                src = vol["configMap"] if kind == "ConfigMap" else vol["secret"]
                name = src["name"] if kind == "ConfigMap" else src["secretName"]
                obj = self._find(kind, name)
                if obj is None:
                    if src.get("optional"):
                        continue
                    raise PodSetupError(f"ContainerCreating: {kind.lower()} {name!r} not found "
                                        f"(volume {vol['name']})")
                data = self._data(obj)
                items = src.get("items") or [{"key": k, "path": k} for k in sorted(data)]
                mode = src.get("defaultMode", 0o644)
                for item in items:
                    if item["key"] not in data:
                        raise PodSetupError(f"ContainerCreating: configmap/secret {name} has no "
                                            f"key {item['key']} (volume {vol['name']})")
                    target = path / item["path"]
                    assert ".." not in Path(item["path"]).parts
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data[item["key"]])
                    target.chmod(item.get("mode", mode))
            else:
                raise PodSetupError(f"podsim does not emulate volume {vol}")
            self._volumes[vol["name"]] = path

    # ------------------------------------------------------------------ containers

    def container(self, name: str) -> Dict:
        for c in (self.spec.get("initContainers") or []) + self.spec.get("containers", []):
            if c["name"] == name:
                return c
        raise KeyError(f"no container {name!r} in the pod spec")

    def root(self, name: str) -> Path:
        return self.workdir / "roots" / name

    def _prepare_root(self, c: Dict) -> Path:
        root = self.root(c["name"])
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        for in_pod, host in self.image_files.items():
            dest = root / in_pod.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(host, dest, ignore=shutil.ignore_patterns("__pycache__"))
        for mount in c.get("volumeMounts") or []:
            if mount["name"] not in self._volumes:
                raise PodSetupError(f"volumeMount {mount['name']!r} names no volume of the pod")
            src = self._volumes[mount["name"]]
            if mount.get("subPath"):
                src = src / mount["subPath"]
            dest = root / mount["mountPath"].lstrip("/")
            if dest.exists() or dest.is_symlink():
                raise PodSetupError(f"two things mounted at {mount['mountPath']}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(src, target_is_directory=src.is_dir())
        term = c.get("terminationMessagePath", "/dev/termination-log")
        tpath = root / term.lstrip("/")
        tpath.parent.mkdir(parents=True, exist_ok=True)
        tpath.write_text("")
        return root

    def _reroot(self, value: str, root: Path) -> str:
        """Absolute paths (also in ':'-lists such as PYTHONPATH) -> under the container root."""
        parts = value.split(":")
        if all(p.startswith("/") and not p.startswith("//") for p in parts if p) and any(parts):
            return ":".join(str(root / p.lstrip("/")) if p else p for p in parts)
        return value

    def environment(self, c: Dict, root: Path,
                    overrides: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        env: Dict[str, str] = {}
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "secretRef" in src or "configMapRef" in src:
                kind = "Secret" if "secretRef" in src else "ConfigMap"
                ref = src.get("secretRef") or src.get("configMapRef")
                obj = self._find(kind, ref["name"])
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise PodSetupError(f"CreateContainerConfigError: {kind} {ref['name']} "
                                        "not found (envFrom)")
                for k, v in self._data(obj).items():
                    env[prefix + k] = v.decode()
        for var in c.get("env") or []:
            name = var["name"]
            if "valueFrom" in var:
                vf = var["valueFrom"]
                if "secretKeyRef" in vf:
                    raw = self._key("Secret", vf["secretKeyRef"], f"env {name}")
                elif "configMapKeyRef" in vf:
                    raw = self._key("ConfigMap", vf["configMapKeyRef"], f"env {name}")
                elif "fieldRef" in vf:
                    fields = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                              "status.podIP": "127.0.0.1", "spec.nodeName": "node-0"}
                    raw = fields[vf["fieldRef"]["fieldPath"]].encode()
                else:
                    raise PodSetupError(f"podsim does not emulate valueFrom {vf}")
                if raw is None:
                    continue
                env[name] = raw.decode()
            else:
                env[name] = expand(str(var.get("value", "")), env)
        env.update(overrides or {})
        return {k: self._reroot(v, root) for k, v in env.items()}

    def argv(self, c: Dict, env: Mapping[str, str], root: Path) -> List[str]:
        words = [expand(w, env) for w in (c.get("command") or [])]
        args = [expand(a, env) for a in (c.get("args") or [])]
        if not words:
            raise PodSetupError("the container has no command: podsim cannot know the image's "
                                "entrypoint")
        if self.image_python is not None and words[0] == self.image_python:
            words[0] = self.python
        return words + [self._reroot(a, root) for a in args]

    def start(self, name: str, env: Optional[Mapping[str, str]] = None,
              command: Optional[List[str]] = None) -> "Running":
        """Start container ``name``; ``command`` replaces its command+args (a probe run in
        the same filesystem and environment)."""
        c = self.container(name)
        root = self._prepare_root(c)
        full_env = self.environment(c, root, env)
        argv = self.argv(c, full_env, root) if command is None else list(command)
        proc_env = dict(full_env)
        venv_bin = str(Path(self.python).parent)
        proc_env["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
        workdir = root / c.get("workingDir", "/").lstrip("/")
        workdir.mkdir(parents=True, exist_ok=True)
        log = tempfile.TemporaryFile(dir=self.workdir)
        proc = subprocess.Popen(argv, env=proc_env, cwd=workdir, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        term = root / c.get("terminationMessagePath", "/dev/termination-log").lstrip("/")
        return Running(proc, log, term, c.get("terminationMessagePolicy", "File"), argv,
                       proc_env, time.monotonic())

    def run(self, name: str, env: Optional[Mapping[str, str]] = None,
            timeout: float = 120, command: Optional[List[str]] = None) -> Outcome:
        return self.start(name, env, command).wait(timeout)


@dataclass
class Running:
    proc: subprocess.Popen
    log: "tempfile._TemporaryFileWrapper"
    termination_path: Path
    policy: str
    argv: List[str]
    env: Dict[str, str]
    started: float

    def running(self) -> bool:
        return self.proc.poll() is None

    def logs(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait(self, timeout: float = 120) -> Outcome:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"container still running after {timeout}s; logs:\n"
                                 f"{self.logs()}") from None
        seconds = time.monotonic() - self.started
        logs = self.logs()
        self.log.close()
        message = self.termination_path.read_text() if self.termination_path.exists() else ""
        if not message.strip() and code != 0 and self.policy == "FallbackToLogsOnError":
            tail = "\n".join(logs.splitlines()[-80:])
            message = tail.encode()[-2048:].decode(errors="replace")
        return Outcome(code, logs, message, seconds)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)


def objects_of(docs: Iterable[Optional[Dict]], kind: str) -> List[Dict]:
    return [d for d in docs if d and d.get("kind") == kind]
