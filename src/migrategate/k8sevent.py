"""An opt-in Kubernetes Event with a run's outcome (``--k8s-event``), where operators look.

``kubectl describe job`` and ``kubectl get events`` then say what the migration did
(reason ``Migrated`` or ``MigrationFailed``, the revision, the exit code and the one-line
message, redacted), without reading a pod's log. It needs what the chart gives only when
asked (``job.events``): a ServiceAccount whose token is mounted and a Role allowing
``create`` on ``events``. Posting is best effort with a short deadline: a missing token, a
refusal or an unreachable API server is a warning and never changes the exit code.

In a pod: the API server from ``KUBERNETES_SERVICE_HOST``/``_PORT`` (or
``MIGRATEGATE_KUBE_API``), the token, CA and namespace from the service-account mount, the
Job's name from ``MIGRATEGATE_JOB_NAME`` (the chart's downward API), the pod's from
``HOSTNAME``. Only the standard library is used.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Mapping, Optional

from .redact import redact

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
SECONDS = 5.0


def event_for(result: Any, env: Mapping[str, str], namespace: str) -> Dict[str, Any]:
    """The Event (a v1 core Event) for a command's result."""
    job, pod = env.get("MIGRATEGATE_JOB_NAME", ""), env.get("HOSTNAME", "")
    involved = ({"apiVersion": "batch/v1", "kind": "Job", "name": job, "namespace": namespace}
                if job else {"apiVersion": "v1", "kind": "Pod", "name": pod,
                             "namespace": namespace})
    ok = result.exit_code == 0
    revision = result.failed_revision or ",".join(result.to_revisions) or "-"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    verb = {"upgrade": ("Migrated", "MigrationFailed")}.get(
        result.command, ("Verified", "VerificationFailed"))
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{involved['name'] or 'migrategate'}.migrategate-",
                     "namespace": namespace},
        "involvedObject": involved,
        "reason": verb[0] if ok else verb[1],
        "message": redact(f"migrategate {result.command}: exit {result.exit_code} "
                          f"({result.outcome}) revision {revision}: {result.message}")[:1000],
        "type": "Normal" if ok else "Warning",
        "source": {"component": "migrategate", "host": pod},
        "reportingComponent": "migrategate", "reportingInstance": pod or "migrategate",
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


def post(result: Any, env: Optional[Mapping[str, str]] = None,
         sa_dir: str = SA) -> Optional[str]:
    """Post the Event; None when it was created, else why not (for a warning)."""
    env = os.environ if env is None else env
    try:
        with open(os.path.join(sa_dir, "token"), encoding="utf-8") as fh:
            token = fh.read().strip()
        with open(os.path.join(sa_dir, "namespace"), encoding="utf-8") as fh:
            namespace = fh.read().strip()
    except OSError as exc:
        return (f"no service-account token to post the Kubernetes Event with ({exc.strerror}):"
                " give the Job a ServiceAccount (job.events in the chart)")
    api = env.get("MIGRATEGATE_KUBE_API") or (
        f"https://{env.get('KUBERNETES_SERVICE_HOST', '')}:"
        f"{env.get('KUBERNETES_SERVICE_PORT', '443')}")
    body = json.dumps(event_for(result, env, namespace)).encode()
    request = urllib.request.Request(
        f"{api}/api/v1/namespaces/{namespace}/events", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=os.path.join(sa_dir, "ca.crt"))
    try:
        with urllib.request.urlopen(request, timeout=SECONDS, context=context) as response:
            if response.status in (200, 201):
                return None
            return f"the API server answered {response.status} to the Event"
    except urllib.error.HTTPError as exc:
        why = "the ServiceAccount may not create events" if exc.code == 403 else exc.reason
        return f"the API server refused the Kubernetes Event ({exc.code}: {why})"
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        return f"could not reach the API server for the Kubernetes Event: {exc}"
