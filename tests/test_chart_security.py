"""The chart's security properties, rendered with the default values and with values-gpu.yaml:
every RayJob's Ray cluster requires a token from a Secret, no Ray pod holds an MLflow admin (or
server) credential, a default-deny NetworkPolicy (ingress and egress) covers the namespace and
only the explicit allows connect anything, every pod meets Pod Security `restricted`, and the
admission policy refuses RayJobs that step outside the chart's shape."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from tools import devtools

NS = "shapebias"
GPU_VALUES = devtools.REPO_ROOT / "deploy" / "helm" / "values-gpu.yaml"
VARIANTS = {"default": [], "gpu-pool": [GPU_VALUES]}
SERVER_SECRETS = {"shapebias-mlflow-auth", "shapebias-s3", "shapebias-postgres", "shapebias-postgres-tls"}
JOB_SECRETS = {"shapebias-mlflow-job", "shapebias-s3-job"}


@pytest.fixture(scope="module")
def renders() -> dict[str, list[dict]]:
    if not os.access(devtools.helm_path(), os.X_OK):
        pytest.skip("helm is missing: run `make tools`")
    return {
        name: [d for d in yaml.safe_load_all(devtools.render_chart(files, {"rayjobs.render": True})) if d]
        for name, files in VARIANTS.items()
    }


def ray_pods(docs):
    return [
        (f"{job['metadata']['name']}/{name}", pod)
        for job in devtools.rayjobs_of(docs)
        for name, pod in devtools.pod_specs(job)
    ]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_ray_cluster_requires_a_token_from_a_secret(renders, variant):
    jobs = devtools.rayjobs_of(renders[variant])
    assert len(jobs) == 10
    for job in jobs:
        assert job["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": "shapebias-ray-auth"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_ray_pod_holds_a_server_credential(renders, variant):
    pods = ray_pods(renders[variant])
    assert len(pods) == 10 * 3
    for name, pod in pods:
        assert not [v for v in pod.get("volumes", []) if "secret" in v or "projected" in v], name
        for c in pod["containers"]:
            assert "envFrom" not in c, name
            refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "valueFrom" in e}
            assert refs <= JOB_SECRETS and not refs & SERVER_SECRETS, (name, refs)
            assert not [
                e
                for e in c.get("env", [])
                if "valueFrom" in e and e["valueFrom"]["secretKeyRef"]["key"].startswith("admin-")
            ], name
    users = {
        d["metadata"]["name"]
        for d in renders[variant]
        for _, pod in devtools.pod_specs(d)
        for c in pod["containers"]
        for e in c.get("env", [])
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "shapebias-mlflow-auth"
    }
    assert users == {"shapebias-mlflow"}  # the admin credential: the MLflow server alone


# ----------------------------------------------------------------------------- network policies


def matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the chart uses matchLabels only
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def peer_matches(peer: dict, pod: dict, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        return pod["ns"] is None  # an address outside the cluster's pods
    if pod["ns"] is None:
        return False
    if "namespaceSelector" in peer:
        ns_ok = matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": pod["ns"]})
    else:
        ns_ok = pod["ns"] == policy_ns
    return ns_ok and matches(peer.get("podSelector", {}), pod["labels"])


def port_matches(rule: dict, port: int) -> bool:
    return "ports" not in rule or any(p["port"] == port for p in rule["ports"])


def side_allows(policies, pod, peer, port, direction) -> bool:
    """Whether the policies selecting ``pod`` let traffic go to/come from ``peer`` (isolated pods
    allow only what a rule names; a pod outside the namespace is not governed here)."""
    if pod["ns"] != NS:
        return True
    selecting = [
        p
        for p in policies
        if matches(p["spec"]["podSelector"], pod["labels"]) and direction in p["spec"]["policyTypes"]
    ]
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(
        port_matches(rule, port) and any(peer_matches(x, peer, NS) for x in rule.get(peers, []))
        for p in selecting
        for rule in p["spec"].get(key, [])
    )


def connects(policies, src, dst, port) -> bool:
    return side_allows(policies, src, dst, port, "Egress") and side_allows(policies, dst, src, port, "Ingress")


def pod_labels(docs, component):
    if component == "rayjob":
        job = devtools.rayjobs_of(docs)[0]
        return job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    dep = next(
        d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        and d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )
    return dep["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_default_deny_covers_the_namespace(renders, variant):
    policies = [d for d in renders[variant] if d["kind"] == "NetworkPolicy"]
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert len(deny) == 1
    for p in policies:
        for rule in p["spec"].get("ingress", []) + p["spec"].get("egress", []):
            peers = rule.get("from", rule.get("to"))
            assert peers, f"{p['metadata']['name']}: a rule without peers allows everyone"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_only_the_explicit_allows_connect(renders, variant):
    docs = renders[variant]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]

    def pod(component=None, ns=NS, labels=None):
        return {"ns": ns, "labels": labels if labels is not None else pod_labels(docs, component)}

    ray, mlflow, db = pod("rayjob"), pod("mlflow"), pod("postgresql")
    stranger = pod(labels={"app": "something-else"})
    impostor = pod(ns="other", labels=ray["labels"])  # the Ray labels, in another namespace
    dns = pod(ns="kube-system", labels={"k8s-app": "kube-dns"})
    operator = pod(ns="kuberay-system", labels={"app.kubernetes.io/name": "kuberay-operator"})
    internet = {"ns": None, "labels": {}}
    allowed = [
        (ray, mlflow, 5000),
        (ray, ray, 6379),
        (ray, ray, 8265),
        (ray, ray, 12345),
        (mlflow, db, 5432),
        (operator, ray, 8265),
        (ray, dns, 53),
        (mlflow, dns, 53),
        (db, dns, 53),
        (mlflow, internet, 443),
        (ray, internet, 443),
    ]
    denied = [
        (stranger, mlflow, 5000),
        (impostor, mlflow, 5000),
        (impostor, ray, 8265),
        (ray, db, 5432),
        (stranger, db, 5432),
        (operator, mlflow, 5000),
        (operator, ray, 6379),
        (db, internet, 443),
        (ray, internet, 80),
        (stranger, internet, 443),
        (stranger, ray, 8265),
        (mlflow, ray, 8265),
    ]
    for src, dst, port in allowed:
        assert connects(policies, src, dst, port), (src, dst, port)
    for src, dst, port in denied:
        assert not connects(policies, src, dst, port), (src, dst, port)


# ----------------------------------------------------------------------------- pods and images

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_pod_meets_pod_security_restricted(renders, variant):
    workloads = [d for d in renders[variant] if d["kind"] != "RayJob"]
    pods = [p for d in workloads for p in devtools.pod_specs(d)] + ray_pods(renders[variant])
    assert len(pods) == 2 + 30
    for name, pod in pods:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), name
        for v in pod.get("volumes", []):
            assert set(v) - {"name"} <= RESTRICTED_VOLUMES, (name, v)
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc.get("privileged") and "add" not in sc["capabilities"], name
            assert all("hostPort" not in p for p in c.get("ports", [])), name


def test_every_image_can_be_pinned_by_digest(renders):
    digest = "sha256:" + "ab" * 32
    sets = {
        f"{path}.digest": digest
        for path in ("image.training", "image.server", "postgresql.image", "s3.inCluster.image")
    }
    stream = devtools.render_chart([GPU_VALUES], {**sets, "rayjobs.render": True, "s3.inCluster.enabled": True})
    docs = [d for d in yaml.safe_load_all(stream) if d]
    pods = [p for d in docs for p in devtools.pod_specs(d)] + ray_pods(docs)
    images = {c["image"] for _, pod in pods for c in pod["containers"]}
    assert len(images) == 4 and all(i.endswith(f"@{digest}") for i in images), images


def test_disruption_budgets_and_database_tls(renders):
    docs = renders["default"]
    pdbs = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert matches(pdbs["shapebias-mlflow"]["selector"], pod_labels(docs, "mlflow"))
    assert matches(pdbs["shapebias-rayjobs"]["selector"], pod_labels(docs, "rayjob"))
    db = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]
    assert "ssl=on" in db["containers"][0]["args"]
    assert {"name": "tls", "secret": {"secretName": "shapebias-postgres-tls", "defaultMode": 0o440}} in db["volumes"]
    server = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "DB_SSLMODE", "value": "require"} in server["env"]


def test_submitter_role_is_narrow(renders):
    role = next(d for d in renders["default"] if d["kind"] == "Role")
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    assert granted == {("", "configmaps", "get")} | {
        ("ray.io", "rayjobs", v) for v in ("get", "list", "watch", "create", "delete")
    }
    assert next(r for r in role["rules"] if r["resources"] == ["configmaps"])["resourceNames"] == ["shapebias-rayjobs"]


# ----------------------------------------------------------------------------- admission policy


def admission(docs, job: dict) -> list[str]:
    """The messages of the policy's validations that ``job`` fails (CEL evaluated by cel-python)."""
    celpy = pytest.importorskip("celpy")
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")["spec"]
    env = celpy.Environment()

    def evaluate(expr, activation):
        # cel-python has no dyn(); it only relaxes type checks, so dropping it keeps the meaning
        return env.program(env.compile(expr.replace("dyn(", "("))).evaluate(activation)

    activation = {"object": celpy.json_to_cel(job)}
    variables = {}
    for var in policy["variables"]:
        try:
            variables[celpy.celtypes.StringType(var["name"])] = evaluate(var["expression"], activation)
        except Exception:  # noqa: BLE001 - a failing variable fails the validations that use it
            pass
    activation["variables"] = celpy.celtypes.MapType(variables)
    failed = []
    for check in policy["validations"]:
        try:
            ok = bool(evaluate(check["expression"], activation))
        except Exception:  # noqa: BLE001 - an evaluation error denies (failurePolicy: Fail)
            ok = False
        if not ok:
            failed.append(check["message"])
    return failed


def _tampered(job, change):
    bad = copy.deepcopy(job)
    change(bad["spec"])
    return bad


TAMPERING = {
    "token auth off": lambda s: s["rayClusterSpec"]["authOptions"].update(mode="disabled"),
    "another token Secret": lambda s: s["rayClusterSpec"]["authOptions"].update(secretName="mine"),
    "no auth": lambda s: s["rayClusterSpec"].pop("authOptions"),
    "another service account": lambda s: s["rayClusterSpec"]["headGroupSpec"]["template"]["spec"].update(
        serviceAccountName="default"
    ),
    "a Secret volume": lambda s: s["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["volumes"].append(
        {"name": "x", "secret": {"secretName": "shapebias-mlflow-auth"}}
    ),
    "the admin password": lambda s: s["submitterPodTemplate"]["spec"]["containers"][0]["env"].append(
        {"name": "P", "valueFrom": {"secretKeyRef": {"name": "shapebias-mlflow-auth", "key": "admin-password"}}}
    ),
    "another image": lambda s: s["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(
        image="evil:1"
    ),
    "no submitter template": lambda s: s.pop("submitterPodTemplate"),
    "an existing cluster": lambda s: s.update(clusterSelector={"ray.io/cluster": "other"}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_admission_policy_admits_the_charts_rayjobs(renders, variant):
    docs = renders[variant]
    for job in devtools.rayjobs_of(docs):
        assert admission(docs, job) == [], job["metadata"]["name"]
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")["spec"]
    assert binding["validationActions"] == ["Deny"]
    assert binding["matchResources"]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": NS}}


@pytest.mark.parametrize("change", list(TAMPERING))
def test_admission_policy_refuses_other_rayjobs(renders, change):
    docs = renders["gpu-pool"]
    job = devtools.rayjobs_of(docs)[0]
    assert admission(docs, _tampered(job, TAMPERING[change])), change
