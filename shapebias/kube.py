"""The Kubernetes API calls of ``shapebias submit``: the kube context, the chart's RayJob templates,
creating a RayJob and following its status. Every refusal becomes a :class:`KubeError` whose
message says what to do.
"""

from __future__ import annotations

import os
import time

import yaml

from shapebias.errors import ConfigError, ShapebiasError
from shapebias.rayjob import GROUP, PLURAL, VERSION

TERMINAL = ("Complete", "Failed", "ValidationFailed")
KUBERAY_INSTALL = (
    "install the KubeRay operator from its own chart: helm repo add kuberay "
    "https://ray-project.github.io/kuberay-helm/ && helm install kuberay-operator "
    "kuberay/kuberay-operator --namespace kuberay-system --create-namespace"
)


class KubeError(ShapebiasError):
    """The cluster refused or could not be reached; the message says what to do."""


def kube_client(context: str | None):
    """(ApiClient, namespace of the context) for the current (or named) kube context."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    # read $KUBECONFIG now: the client reads it once, at import
    where = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        contexts, active = config.list_kube_config_contexts(config_file=where)
        if context is not None:
            chosen = next((c for c in contexts if c["name"] == context), None)
            if chosen is None:
                names = ", ".join(c["name"] for c in contexts) or "none"
                raise ConfigError(f"kube context {context!r} is not in {where}; contexts: {names}")
        else:
            chosen = active
        if not chosen:
            raise ConfigError(
                f"no current kube context in {where}: run `kubectl config use-context NAME` or pass --context"
            )
        api = config.new_client_from_config(config_file=where, context=chosen["name"])
    except (ConfigException, OSError) as exc:
        raise ConfigError(
            f"no Kubernetes context ({where}: {exc}); set KUBECONFIG or run `kubectl config use-context NAME`"
        ) from None
    namespace = chosen.get("context", {}).get("namespace") or "default"
    client.Configuration.set_default(api.configuration)
    return api, namespace


def _api_message(exc) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or exc.reason
    except Exception:  # noqa: BLE001 - any body that is not Status JSON
        return str(exc.reason)


def _call(what: str, fn, *args, **kwargs):
    """Run a kubernetes client call; connection failures become a KubeError."""
    import urllib3

    try:
        return fn(*args, **kwargs)
    except urllib3.exceptions.HTTPError as exc:
        raise KubeError(f"cannot reach the Kubernetes API to {what}: {exc}") from None


def configmap_names(release: str) -> list[str]:
    """The chart's ConfigMap of templates: ``<fullname>-rayjobs`` (fullname is the release name
    when it contains "shapebias", else ``<release>-shapebias``)."""
    names = [f"{release}-rayjobs"]
    if "shapebias" not in release:
        names.append(f"{release}-shapebias-rayjobs")
    return names


def fetch_template(api, namespace: str, release: str, experiment: str) -> dict:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    cm = None
    for name in configmap_names(release):
        try:
            cm = _call(f"read ConfigMap {name}", core.read_namespaced_config_map, name, namespace)
            break
        except ApiException as exc:
            if exc.status == 404:
                continue
            if exc.status == 403:
                raise KubeError(
                    f"forbidden to read ConfigMap {name} in namespace {namespace} (RBAC): ask the admin to bind "
                    f"Role {name.removesuffix('-rayjobs')}-submitter to you ({_api_message(exc)})"
                ) from None
            raise KubeError(f"reading ConfigMap {name} failed: {exc.status} {_api_message(exc)}") from None
    if cm is None:
        raise KubeError(
            f"ConfigMap {' or '.join(configmap_names(release))} not found in namespace {namespace}: the shapebias "
            f"chart is not installed there (helm install {release} deploy/helm/shapebias -n {namespace}), "
            "or pass --release/--namespace"
        )
    text = (cm.data or {}).get(f"{experiment}.yaml")
    if not text:
        raise KubeError(
            f"ConfigMap {cm.metadata.name} has no template for {experiment} (keys: {', '.join(cm.data or {})})"
        )
    return yaml.safe_load(text)


def create_rayjob(api, namespace: str, body: dict) -> dict:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    name = body["metadata"]["name"]
    objects = client.CustomObjectsApi(api)
    try:
        return _call(
            f"create RayJob {name}", objects.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body
        )
    except ApiException as exc:
        message = _api_message(exc)
        if exc.status == 404:
            if "namespaces" in message and namespace in message:
                raise KubeError(f"namespace {namespace} does not exist ({message})") from None
            raise KubeError(
                f"the cluster does not serve {PLURAL}.{GROUP}/{VERSION} (no KubeRay CRDs for namespace {namespace}): "
                f"{KUBERAY_INSTALL}"
            ) from None
        if exc.status == 409:
            raise KubeError(
                f"RayJob {name} already exists in namespace {namespace}: pick another --name, or delete it "
                f"(kubectl -n {namespace} delete rayjob {name})"
            ) from None
        if exc.status == 403:
            raise KubeError(
                f"forbidden to create RayJobs in namespace {namespace} (RBAC): ask the admin to bind the chart's "
                f"Role <release>-submitter to you ({message})"
            ) from None
        if exc.status == 422:
            raise KubeError(f"the cluster rejected RayJob {name} as invalid: {message}") from None
        raise KubeError(f"creating RayJob {name} failed: {exc.status} {message}") from None


def wait_rayjob(api, namespace: str, name: str, poll: float, timeout: float) -> dict:
    """Follow a RayJob's status until KubeRay reports a terminal deployment status."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    objects = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last = None
    while True:
        try:
            obj = _call(
                f"read RayJob {name}", objects.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise KubeError(f"RayJob {name} disappeared from namespace {namespace}") from None
            raise KubeError(f"reading RayJob {name} failed: {exc.status} {_api_message(exc)}") from None
        status = obj.get("status") or {}
        state = (status.get("jobDeploymentStatus") or "New", status.get("jobStatus") or "-")
        if state != last:
            extra = f" ({status['message']})" if status.get("message") else ""
            print(f"{time.strftime('%H:%M:%S')}  {name}: {state[0]}, job {state[1]}{extra}", flush=True)
            last = state
        if state[0] in TERMINAL:
            return obj
        if deadline is not None and time.monotonic() > deadline:
            raise KubeError(f"gave up waiting for RayJob {name} after {timeout:.0f} s (it goes on running)")
        time.sleep(poll)
