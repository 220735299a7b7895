"""Values the chart refuses at render time: what the API server, the kubelet or migrategate
would refuse later, and a password that would otherwise be a literal in a pod spec.
Every refusal names the value and what to change, and never repeats the password."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

from chartlib import CHART, LINT_VALUES, Helm, merge, one, values

SECRET = "Hunter2-xyz"

# Kubernetes' own rules (k8s.io/apimachinery/pkg/util/validation).
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _assert_no_secret(text: str, secret: str = SECRET) -> None:
    assert secret not in text, text
    for part in re.split(r"[/?#@]", secret):  # no fragment of it either
        if len(part) >= 3:
            assert part not in text, text


def _label_problems(labels: Dict[str, str]) -> List[str]:
    bad = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
            bad.append(f"key {key!r}")
        if len(name) > 63 or not LABEL_NAME.match(name):
            bad.append(f"key {key!r}")
        if len(value) > 63 or not LABEL_VALUE.match(value):
            bad.append(f"{key}={value!r}")
    return bad


def assert_valid_for_the_api(docs: List[Dict[str, Any]]) -> None:
    """Names and labels as the API server checks them (and the Job's pods: job-name label)."""
    assert docs
    for doc in docs:
        meta = doc["metadata"]
        name = meta["name"]
        assert len(name) <= 253 and DNS1123_SUBDOMAIN.match(name), f"{doc['kind']} {name!r}"
        if doc["kind"] in ("Job", "Pod"):
            assert len(name) <= 63, name  # the job-name label; a pod's hostname
        assert not _label_problems(meta.get("labels") or {}), (name, meta["labels"])
        if doc["kind"] == "Job":
            tmpl = doc["spec"]["template"]["metadata"]
            assert not _label_problems(tmpl.get("labels") or {}), tmpl["labels"]


# --------------------------------------------------------------------- 1. database.url

@pytest.mark.parametrize("url", [
    f"postgresql://app:pa/{SECRET}@db/app",
    f"postgresql://app:pa?{SECRET}@db/app",
    f"postgresql://app:pa#{SECRET}@db/app",
    f"mysql+pymysql://app:{SECRET}/x?y#z@db:3306/app",
    f"postgresql://app:{SECRET}@db@other/app",  # SQLAlchemy: password ends at the first '@'
    f"postgresql://app:{SECRET}@db/app",
    f"postgresql://app:{SECRET}%2F@db/app",
])
def test_url_with_a_password_is_refused_wherever_it_ends(helm: Helm, url: str) -> None:
    err = helm.template_error(values=values(database={"url": url}))
    assert "database.url must not contain a password" in err, err
    assert "database.existingSecret" in err  # says what to do instead
    _assert_no_secret(err)


@pytest.mark.parametrize("url", [
    "postgresql://app@db:5432/app",
    "postgresql://db:5432/app",
    "postgresql://app@db/app?sslmode=require&application_name=a:b",
    "postgresql://app@[::1]:5432/app",
    "sqlite:////data/app.db",
])
def test_url_without_a_password_renders(helm: Helm, url: str) -> None:
    docs = helm.template(values=values(database={"url": url}))
    env = {e["name"]: e for e in one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]
           ["env"]}
    assert env["MIGRATEGATE_DATABASE_URL"]["value"] == url


def test_parent_chart_helpers_refuse_a_url_password(helm: Helm, parent_chart: Path) -> None:
    for gate in ("wait", "upgrade"):
        err = helm.template_error(chart=parent_chart, values={
            "schemaGate": gate,
            "migrategate": {"job": {"enabled": False}, "tests": {"enabled": False},
                            "database": {"url": f"postgresql://shop:x/{SECRET}@pg/shop"}}})
        assert "database.url must not contain a password" in err, err
        _assert_no_secret(err)


# --------------------------------------------------------------------- 2. args and env

URL_WITH_SECRET = f"postgresql://u:{SECRET}@h/d"


@pytest.mark.parametrize("over, where", [
    ({"upgrade": {"extraArgs": [f"--database-url={URL_WITH_SECRET}"]}}, "upgrade.extraArgs[0]"),
    ({"upgrade": {"extraArgs": ["--json", "--database-url", URL_WITH_SECRET]}},
     "upgrade.extraArgs[2]"),
    ({"gate": {"extraArgs": [f"--database-url={URL_WITH_SECRET}"]}}, "gate.extraArgs[0]"),
    ({"code": {"source": "image", "command": ["migrategate", f"--database-url={URL_WITH_SECRET}"]}},
     "code.command[1]"),
])
def test_password_in_arguments_is_refused(helm: Helm, over: Dict[str, Any], where: str) -> None:
    err = helm.template_error(values=merge(values(), over))
    assert where in err and "password" in err, err
    assert "database.url" in err and "database.existingSecret" in err, err
    _assert_no_secret(err)


@pytest.mark.parametrize("env", [
    {"name": "MIGRATEGATE_DATABASE_PASSWORD", "value": SECRET},
    {"name": "DB_PASSWORD", "value": SECRET},
    {"name": "PGPASSWORD", "value": SECRET},
    {"name": "DATABASE_URL", "value": URL_WITH_SECRET},
    {"name": "MIGRATEGATE_DATABASE_URL", "value": URL_WITH_SECRET},
    {"name": "MIGRATEGATE_REDIS_URL", "value": f"redis://:{SECRET}@redis:6379/0"},
])
def test_password_in_extra_env_is_refused(helm: Helm, env: Dict[str, str]) -> None:
    err = helm.template_error(values=values(extraEnv=[{"name": "A", "value": "b"}, env]))
    assert f"extraEnv[1] ({env['name']})" in err, err
    assert "valueFrom" in err and "secretKeyRef" in err, err
    _assert_no_secret(err)


def test_extra_env_from_secrets_and_harmless_literals_render(helm: Helm) -> None:
    extra = [
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
        {"name": "REDIS_PASSWORD", "value": ""},  # Dify: "" is "no password"
        {"name": "MIGRATEGATE_DATABASE_PASSWORD_FILE", "value": "/run/secrets/pw"},
        {"name": "DATABASE_URL", "value": "postgresql://app@db/app"},
    ]
    docs = helm.template(values=values(extraEnv=extra,
                                       upgrade={"extraArgs": ["--lock-retries=2"]}))
    env = one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] in {x["name"] for x in extra}] == extra


def test_inline_password_is_in_the_release_record_notes_and_readme(helm: Helm) -> None:
    out = helm.run("install", "shop", str(CHART), "-n", "apps", "--dry-run=client",
                   "-f", str(LINT_VALUES)).stdout
    notes = out.split("NOTES:", 1)[1]
    assert "helm get values shop -n apps" in notes, notes
    assert "database.existingSecret" in notes
    assert "not-a-real-password" not in notes
    out = helm.run("install", "shop", str(CHART), "-n", "apps", "--dry-run=client",
                   "-f", str(LINT_VALUES), "--set", "database.password=",
                   "--set", "database.existingSecret=db").stdout
    assert "helm get values" not in out.split("NOTES:", 1)[1]
    readme = (CHART / "README.md").read_text()
    assert "helm get values" in readme


# --------------------------------------------------------------------- 3. names

@pytest.mark.parametrize("over", [
    # trunc 63 lands right after a '.', or on "--" (trimSuffix "-" removed only one)
    {"nameOverride": "a" * 57 + ".bc"},
    {"nameOverride": "a" * 56 + "--b"},
    {"nameOverride": "a" * 38 + "." + "b" * 20},  # the Job name's trunc 44
    {"nameOverride": "a" * 50 + "." + "b" * 8},  # the test pod's trunc 56
    {"fullnameOverride": "a" * 43 + "." + "b" * 19},
    {"fullnameOverride": "a" * 55 + "." + "b" * 7},
    {"nameOverride": "a" * 38 + "." + "b" * 20, "job": {"nameSuffixOverride": "x" * 18}},
    {"nameOverride": "a" * 38 + "." + "b" * 20, "job": {"hook": {"enabled": True}}},
])
def test_truncated_names_stay_valid(helm: Helm, over: Dict[str, Any]) -> None:
    docs = helm.template(values=merge(values(), over))
    assert_valid_for_the_api(docs)


@pytest.mark.parametrize("over, key", [
    ({"nameOverride": "MyApp"}, "nameOverride"),
    ({"nameOverride": "my_app"}, "nameOverride"),
    ({"nameOverride": "-app"}, "nameOverride"),
    ({"nameOverride": "app."}, "nameOverride"),
    ({"fullnameOverride": "Shop-DB"}, "fullnameOverride"),
    ({"fullnameOverride": "shop_db"}, "fullnameOverride"),
    ({"fullnameOverride": "shop..db"}, "fullnameOverride"),
])
def test_invalid_name_overrides_are_refused(helm: Helm, over: Dict[str, Any], key: str) -> None:
    err = helm.template_error(values=merge(values(), over))
    value = next(iter(over.values()))
    assert f"migrategate: {key} {value!r}".replace("'", '"') in err, err
    assert "lowercase" in err, err


def test_valid_name_overrides_render(helm: Helm) -> None:
    docs = helm.template(values=values(nameOverride="db.migrate", fullnameOverride=""))
    assert one(docs, "ConfigMap")["metadata"]["name"] == "shop-db.migrate-code"
    assert_valid_for_the_api(docs)
    docs = helm.template(values=values(fullnameOverride="shop-schema"))
    assert one(docs, "ConfigMap")["metadata"]["name"] == "shop-schema-code"


# --------------------------------------------------------------------- 3. labels

@pytest.mark.parametrize("over, where", [
    ({"commonLabels": {"team": "data platform"}}, 'commonLabels "team"'),
    ({"commonLabels": {"team": "x" * 64}}, 'commonLabels "team"'),
    ({"commonLabels": {"team": "-x"}}, 'commonLabels "team"'),
    ({"podLabels": {"owner": "a@b.c"}}, 'podLabels "owner"'),
    ({"podLabels": {"tier": "db_"}}, 'podLabels "tier"'),
])
def test_invalid_label_values_are_refused(helm: Helm, over: Dict[str, Any], where: str) -> None:
    err = helm.template_error(values=merge(values(), over))
    assert f"migrategate: {where}" in err and "label value" in err and "63" in err, err


@pytest.mark.parametrize("over, where", [
    ({"commonLabels": {"bad key": "x"}}, 'commonLabels "bad key"'),
    ({"commonLabels": {"Example.com/tier": "x"}}, 'commonLabels "Example.com/tier"'),
    ({"podLabels": {"a/b/c": "x"}}, 'podLabels "a/b/c"'),
    ({"podLabels": {"k" * 64: "x"}}, f'podLabels "{"k" * 64}"'),
])
def test_invalid_label_keys_are_refused(helm: Helm, over: Dict[str, Any], where: str) -> None:
    err = helm.template_error(values=merge(values(), over))
    assert f"migrategate: {where}" in err and "label key" in err, err


def test_valid_labels_render(helm: Helm) -> None:
    labels = {"team": "data-platform", "example.com/tier": "db", "empty": "", "v": "1.2_3"}
    docs = helm.template(values=values(commonLabels=labels, podLabels={"x": "X" * 63}))
    assert_valid_for_the_api(docs)
    job = one(docs, "Job")
    assert job["metadata"]["labels"]["example.com/tier"] == "db"
    assert job["spec"]["template"]["metadata"]["labels"]["x"] == "X" * 63


@pytest.mark.parametrize("over, where", [
    ({"commonAnnotations": {"note to self": "x"}}, 'commonAnnotations "note to self"'),
    ({"podAnnotations": {"a/b/c": "x"}}, 'podAnnotations "a/b/c"'),
    ({"job": {"annotations": {"_x": "z"}}}, 'job.annotations "_x"'),
])
def test_invalid_annotation_keys_are_refused(helm: Helm, over: Dict[str, Any], where: str) -> None:
    err = helm.template_error(values=merge(values(), over))
    assert f"migrategate: {where}" in err and "annotation key" in err, err


def test_annotation_values_are_free_text(helm: Helm) -> None:
    note = "free text: spaces, 'quotes' and more than 63 characters " + "x" * 64
    docs = helm.template(values=values(commonAnnotations={"example.com/note": note},
                                       podAnnotations={"team": "data platform"}))
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["example.com/note"] == note
    assert job["spec"]["template"]["metadata"]["annotations"]["team"] == "data platform"


# --------------------------------------------------------------------- 3. image

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("image, message", [
    ({"repository": f"ghcr.io/example/app@{DIGEST}", "tag": "1.0.0"},
     "image.repository holds a digest"),
    ({"repository": f"ghcr.io/example/app@{DIGEST}", "tag": "", "digest": DIGEST},
     "image.repository holds a digest"),
    ({"tag": DIGEST}, "image.tag holds a digest"),
    ({"tag": DIGEST, "digest": DIGEST}, "image.tag holds a digest"),
    ({"tag": f"1.0.0@{DIGEST}"}, "image.tag holds a digest"),
    ({"repository": "ghcr.io/example/app:1.0.0", "tag": "1.0.1"}, "image.repository holds a tag"),
    ({"tag": "1.0 beta"}, 'image.tag "1.0 beta"'),
    ({"tag": "-rc1"}, 'image.tag "-rc1"'),
    ({"tag": "v" * 129}, "image.tag"),
    ({"repository": "ghcr.io/Example/App"}, "image.repository"),
    ({"repository": "ghcr.io/example/app "}, "image.repository"),
    ({"registry": "registry.example.com:port"}, "image.registry"),
])
def test_invalid_image_references_are_refused(helm: Helm, image: Dict[str, Any],
                                              message: str) -> None:
    err = helm.template_error(values=values(image=image))
    assert f"migrategate: {message}" in err, err
    if "digest" in message:
        assert "image.digest" in err


@pytest.mark.parametrize("image, ref", [
    ({"digest": DIGEST}, f"ghcr.io/example/app@{DIGEST}"),
    ({"repository": f"ghcr.io/example/app@{DIGEST}", "tag": ""}, f"ghcr.io/example/app@{DIGEST}"),
    ({"registry": "localhost:5000", "repository": "example/app"},
     "localhost:5000/example/app:1.0.0"),
    ({"repository": "ghcr.io/example/app:1.0.0", "tag": ""}, "ghcr.io/example/app:1.0.0"),
    ({"repository": "app", "tag": "1.0.0_RC-1.b"}, "app:1.0.0_RC-1.b"),
    ({"repository": "Registry.Example.com/team/app__x"}, "Registry.Example.com/team/app__x:1.0.0"),
])
def test_valid_image_references_render(helm: Helm, image: Dict[str, Any], ref: str) -> None:
    job = one(helm.template(values=values(image=image)), "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == ref


def test_global_image_registry_is_checked_too(helm: Helm) -> None:
    err = helm.template_error(values=merge(values(), {"global": {"imageRegistry": "a b"}}))
    assert "global.imageRegistry" in err, err
