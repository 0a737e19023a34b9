"""The Kubernetes manifests (deploy/kubernetes), rendered offline with kustomize (built into
kubectl): valid against two Kubernetes versions' schemas, and holding the rules that let a
rollout, a drain or a config change pass without refused requests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gatekeeper.gateway.builtin.endpoints import RESERVED_PATHS
from tests.integration.deploy_support import DEPLOY, check_config, known_variables, project_version

KUBERNETES = DEPLOY / "kubernetes"
# The oldest Kubernetes still supported by its providers when written, and a newer one.
VERSIONS = ("1.29", "1.31")
# Seconds a stopping pod's components may take after the listener drained (the waiting room's
# admission worker is given 5 s to finish its tick).
COMPONENTS_STOP = 5
# Seconds an endpoint removal takes to reach kube-proxy and ingress controllers, typically.
ENDPOINT_PROPAGATION = 5


def render(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize directory``: what ``kubectl apply -k`` would send, offline."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render deploy/kubernetes (its built-in kustomize)")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(KUBERNETES)


def _of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def _templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template: Deployments' and Jobs'."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]


def _containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", selector)
    return all(labels.get(k) == v for k, v in match.items())


def _gateway(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and its ``gatekeeper serve`` container."""
    (deployment,) = _of(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["gatekeeper", "serve"]
    return deployment, container


def _mounted_config(docs: list[dict[str, Any]], tmp_path: Path) -> Path:
    deployment, _ = _gateway(docs)
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (name,) = [v["configMap"]["name"] for v in volumes if "configMap" in v]
    (config_map,) = [c for c in _of(docs, "ConfigMap") if c["metadata"]["name"] == name]
    path = tmp_path / "gatekeeper.yaml"
    path.write_text(config_map["data"]["gatekeeper.yaml"])
    return path


def test_manifests_are_valid_against_two_kubernetes_versions(
    rendered: list[dict[str, Any]],
) -> None:
    """Every rendered object and the Secret example pass the strict schema (unknown fields
    refused) of Kubernetes 1.29 and 1.31."""
    secret = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())
    kinds = {doc["kind"] for doc in rendered}
    assert kinds >= {"Deployment", "Service", "PodDisruptionBudget", "Job", "ConfigMap"}
    for version in VERSIONS:
        for doc in [*rendered, secret]:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_rejects_a_misspelt_field(rendered: list[dict[str, Any]]) -> None:
    """The validation above can fail: a misspelt field of the Deployment is rejected by both
    versions."""
    deployment, _ = _gateway(rendered)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 40
    for version in VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, version, strict=True)


def test_each_deployment_has_a_disruption_budget_of_its_own(
    rendered: list[dict[str, Any]],
) -> None:
    """Each Deployment's pods are selected by exactly one PodDisruptionBudget that leaves some
    of them running, and no other pod (the migration Job's) is counted by it or by the
    Service."""
    budgets = _of(rendered, "PodDisruptionBudget")
    (service,) = _of(rendered, "Service")
    for deployment in _of(rendered, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        mine = [b for b in budgets if _selects(b["spec"]["selector"], labels)]
        assert len(mine) == 1, deployment["metadata"]["name"]
        spec = mine[0]["spec"]
        assert spec.get("maxUnavailable") == 1 or spec.get("minAvailable", 0) >= 1
        assert deployment["spec"]["replicas"] >= 2
        assert _selects(service["spec"]["selector"], labels)
    for name, template in _templates(rendered):
        if name.startswith("Job/"):
            labels = template["metadata"]["labels"]
            assert not _selects(service["spec"]["selector"], labels), name
            assert not any(_selects(b["spec"]["selector"], labels) for b in budgets), name


def test_the_grace_period_covers_the_prestop_wait_and_the_drain(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    """preStop waits longer than endpoint propagation; terminationGracePeriodSeconds exceeds
    preStop + the mounted file's listener.shutdown_grace + the components' stop."""
    deployment, container = _gateway(rendered)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    prestop = float(command[1])
    config, _ = check_config(_mounted_config(rendered, tmp_path), {})
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert prestop > ENDPOINT_PROPAGATION
    assert grace >= prestop + config.listener.shutdown_grace + COMPONENTS_STOP, (
        grace,
        prestop,
        config.listener.shutdown_grace,
    )
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0  # a new pod is ready before an old one stops


def test_every_container_runs_under_the_restricted_profile(
    rendered: list[dict[str, Any]],
) -> None:
    """Every container (init ones and the Job's too): non-root, no privilege escalation, all
    capabilities dropped, RuntimeDefault seccomp, a read-only root with /tmp an emptyDir, and
    no service-account token."""
    for name, template in _templates(rendered):
        pod = template["spec"]
        assert pod.get("automountServiceAccountToken") is False, name
        pod_context = pod.get("securityContext", {})
        empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for container in _containers(template):
            where = f"{name}/{container['name']}"
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, where
            assert context.get("runAsUser", 0) != 0, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert context.get("readOnlyRootFilesystem") is True, where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in empty_dirs, where


def test_images_are_pinned_to_the_project_version(rendered: list[dict[str, Any]]) -> None:
    """Every container's image names a tag, the project's version, never ``latest``."""
    version = project_version()
    images = [c["image"] for _, t in _templates(rendered) for c in _containers(t)]
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name, image
        assert "/" not in tag, image
        assert tag == version, image


def test_probes_watch_the_replica_on_its_configured_port(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    """startup and liveness probe /health, readiness /ready, on the port the mounted file
    listens on; a slow start gets a minute before liveness may restart it."""
    _, container = _gateway(rendered)
    config, _ = check_config(_mounted_config(rendered, tmp_path), {})
    (port,) = container["ports"]
    assert port["containerPort"] == config.listener.port
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in (port["name"], port["containerPort"]), probe
        assert get["path"] in RESERVED_PATHS, probe
        paths[probe] = get["path"]
    assert paths == {
        "startupProbe": "/health",
        "readinessProbe": "/ready",
        "livenessProbe": "/health",
    }
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_replicas_spread_over_nodes_and_zones(rendered: list[dict[str, Any]]) -> None:
    """Topology spread over hostnames (hard) and zones (soft), counting only the Deployment's
    own pods of the same revision."""
    deployment, _ = _gateway(rendered)
    template = deployment["spec"]["template"]
    constraints = {c["topologyKey"]: c for c in template["spec"]["topologySpreadConstraints"]}
    assert constraints["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert constraints["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in constraints.values():
        assert constraint["maxSkew"] == 1
        assert _selects(constraint["labelSelector"], template["metadata"]["labels"])
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_every_container_has_resources(rendered: list[dict[str, Any]]) -> None:
    """Requests for CPU and memory and a memory limit on every container."""
    for name, template in _templates(rendered):
        for container in _containers(template):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name


def test_a_configuration_change_rolls_the_pods(tmp_path: Path) -> None:
    """The ConfigMap's name is a hash of gatekeeper.yaml: the same file renders the same pod
    template, a changed file a new ConfigMap that the pod template mounts (a rollout)."""
    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copy)

    def mounted() -> tuple[str, dict[str, Any]]:
        docs = render(copy)
        deployment, _ = _gateway(docs)
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        (name,) = [v["configMap"]["name"] for v in volumes if "configMap" in v]
        assert name in {c["metadata"]["name"] for c in _of(docs, "ConfigMap")}
        return name, deployment["spec"]["template"]

    before, template = mounted()
    assert before.startswith("gatekeeper-config-")
    assert mounted() == (before, template)
    config = copy / "gatekeeper.yaml"
    config.write_text(config.read_text().replace("100/minute", "120/minute"))
    after, changed = mounted()
    assert after != before
    assert changed != template


def test_the_mounted_configuration_passes_serve_check_with_the_secret(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The pod's environment (the Secret example's values) names only variables Gatekeeper
    reads, and under it the mounted file passes ``serve --check``."""
    secret = yaml.safe_load((KUBERNETES / "secret.example.yaml").read_text())
    _, container = _gateway(rendered)
    env = {}
    for variable in container["env"]:
        assert variable["name"] in known_variables(), variable["name"]
        source = variable.get("valueFrom", {}).get("secretKeyRef")
        if source is None:
            env[variable["name"]] = variable["value"]
        else:
            assert source["name"] == secret["metadata"]["name"]
            env[variable["name"]] = secret["stringData"][source["key"]]
    assert {"GATEKEEPER_REDIS_URL", "GATEKEEPER_JWT_SECRET", "GATEKEEPER_DATABASE_URL"} <= set(env)
    _, problems = check_config(_mounted_config(rendered, tmp_path), env)
    assert problems == []
    # ...and the check is not a formality: without the secret it refuses the same file.
    del env["GATEKEEPER_JWT_SECRET"]
    _, problems = check_config(_mounted_config(rendered, tmp_path), env)
    assert any("GATEKEEPER_JWT_SECRET" in p for p in problems), problems


def test_the_schema_is_migrated_before_new_pods_serve(rendered: list[dict[str, Any]]) -> None:
    """A Job of this version runs ``gatekeeper migrate`` against the pods' database; the pods
    wait in an initContainer until ``gatekeeper migrate --check`` passes."""
    version = project_version()
    deployment, container = _gateway(rendered)
    database = [v for v in container["env"] if v["name"] == "GATEKEEPER_DATABASE_URL"]
    (job,) = _of(rendered, "Job")
    assert job["metadata"]["name"].endswith(version)
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["gatekeeper", "migrate"]
    assert [v for v in migrate["env"] if v["name"] == "GATEKEEPER_DATABASE_URL"] == database
    (wait,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert "gatekeeper migrate --check" in " ".join(wait["command"])
    assert [v for v in wait["env"] if v["name"] == "GATEKEEPER_DATABASE_URL"] == database
