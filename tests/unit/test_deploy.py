"""The deploy files: what they reference exists, and what they render is what an operator
needs (routing between pods, scraping, pod security, no placeholder secrets).

The Kubernetes manifests are rendered by the real kustomize (``kubectl kustomize``, or a
``kustomize`` binary) and validated by ``kubernetes-validate --strict``; ``.ci/run``
installs both.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from streams.api.collector import REGISTRY as COLLECTOR_REGISTRY
from streams.runtime.metrics import REGISTRY
from streams.settings import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "production")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_series() -> set[str]:
    return {
        family.name + suffix
        for registry in (REGISTRY, COLLECTOR_REGISTRY)
        for family in registry.collect()
        for suffix in _SUFFIXES[family.type]
    }


@pytest.mark.parametrize(
    "path",
    [
        DEPLOY / "grafana" / "dashboards" / "cdp-streams.json",
        DEPLOY / "prometheus" / "alerts.yml",
    ],
    ids=lambda path: Path(path).name,
)
def test_deploy_files_reference_only_exported_metrics(path: Path) -> None:
    referenced = set(re.findall(r"\bcdp_[a-z_]+", path.read_text()))
    assert referenced
    assert referenced <= exported_series(), referenced - exported_series()


def kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    pytest.fail("no kustomize: install kubectl or kustomize (.ci/run does)")


def render(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        r
        for r in resources
        if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of $(VAR) in an env value: defined variables only, $$ escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, value)


def pod_environment(resources: list[dict[str, Any]], ordinal: int) -> dict[str, str]:
    """The environment the worker container of pod ``<statefulset>-<ordinal>`` gets."""
    statefulset = one(resources, "StatefulSet")
    namespace = statefulset["metadata"].get("namespace", "default")
    pod_name = f"{statefulset['metadata']['name']}-{ordinal}"
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = expand(variable["value"], env)
        else:
            env[variable["name"]] = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    name: str = request.param
    return name, render(K8S / "overlays" / name)


def test_rendered_overlays_pass_strict_schema_validation(
    overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    name, resources = overlay
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(yaml.safe_dump_all(resources))
    validator = Path(sys.executable).parent / "kubernetes-validate"
    done = subprocess.run(
        [str(validator), "--strict", str(rendered)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed for resource") == len(resources), done.stdout


def test_each_worker_advertises_its_stable_pod_dns_name(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, resources = overlay
    statefulset = one(resources, "StatefulSet")
    namespace = statefulset["metadata"]["namespace"]
    service = one(resources, "Service", statefulset["spec"]["serviceName"])
    # Pod DNS names exist only through a headless Service that governs the StatefulSet.
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["metadata"]["namespace"] == namespace
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    for ordinal in (0, 1):
        env = pod_environment(resources, ordinal)
        pod = f"{statefulset['metadata']['name']}-{ordinal}"
        service_name = service["metadata"]["name"]
        assert env["CDP_ADVERTISED_URL"] == f"http://{pod}.{service_name}.{namespace}.svc:{port}"
        assert env["CDP_WEB_PORT"] == str(port)


def test_no_rendered_secret_can_overwrite_the_production_token() -> None:
    resources = render(K8S / "overlays" / "production")
    assert not [r for r in resources if r["kind"] == "Secret"]
    container = one(resources, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "cdp-streams"}} in container["envFrom"]
    assert "CDP_API_TOKEN" not in one(resources, "ConfigMap", "cdp-streams")["data"]


def test_pods_meet_the_restricted_pod_security_standard(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, resources = overlay
    namespace = one(resources, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = one(resources, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    allowed_volumes = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "projected"}
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= allowed_volumes
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        assert context["readOnlyRootFilesystem"] is True
        # Writable places: the state volume (CDP_DATA_DIR) and /tmp.
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"/data", "/tmp"}
        assert pod_environment(resources, 0)["CDP_DATA_DIR"] == "/data"


def test_availability(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    statefulset = one(resources, "StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    pod = statefulset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # Website traffic reaches ready workers only.
    api = one(resources, "Service", "cdp-streams-api")
    assert api["spec"].get("clusterIP") != "None"
    assert not api["spec"].get("publishNotReadyAddresses", False)
    assert api["spec"]["selector"].items() <= labels.items()
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    # A long restore is covered by the startup probe, not killed by the liveness probe.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert "initialDelaySeconds" not in container["livenessProbe"]
    budget = one(resources, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert spread == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert pod["affinity"]["podAntiAffinity"]
    # Workers beyond the partition count would get no partitions.
    partitions = int(pod_environment(resources, 0)["CDP_PARTITIONS"])
    assert 1 <= statefulset["spec"]["replicas"] <= partitions


def test_production_never_puts_two_workers_on_one_node() -> None:
    pod = one(render(K8S / "overlays" / "production"), "StatefulSet")["spec"]["template"]["spec"]
    by_key = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert by_key["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"


def test_the_pod_monitor_scrapes_the_workers_port() -> None:
    monitoring = render(K8S / "monitoring")
    monitor = one(monitoring, "PodMonitor")
    statefulset = one(render(K8S / "base"), "StatefulSet")
    template = statefulset["spec"]["template"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["http"]
    assert "http" in ports


def test_the_prometheus_rule_is_alerts_yml() -> None:
    rule = one(render(K8S / "monitoring"), "PrometheusRule")
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], (
        "regenerate: python deploy/prometheus/to_prometheusrule.py"
        " > deploy/k8s/monitoring/prometheusrule.yaml"
    )


def test_no_alert_rule_names_a_job() -> None:
    text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert "job=" not in text.replace(" ", "")


def lock_pins() -> dict[str, str]:
    lines = (DEPLOY / "requirements.lock").read_text().splitlines()
    pins = {}
    for line in lines:
        found = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if found:
            pins[normalized(found.group(1))] = found.group(2)
    return pins


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    return [Requirement(spec) for spec in project["project"]["dependencies"]]


def dependency_closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution ``requirements`` need, with their extras, as installed here."""
    needed: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = list(requirements)
    while pending:
        requirement = pending.pop()
        key = (normalized(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        needed.add(key[0])
        for spec in metadata.distribution(requirement.name).requires or []:
            dependency = Requirement(spec)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in extras
            ):
                pending.append(dependency)
    return needed


def test_the_image_lock_pins_every_dependency_within_pyproject_ranges() -> None:
    pins = lock_pins()
    for requirement in runtime_requirements():
        name = normalized(requirement.name)
        assert name in pins, f"{name} is not pinned in deploy/requirements.lock (make lock)"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {requirement}"


def test_the_image_lock_holds_every_dependency_of_the_dependencies() -> None:
    # The image installs the lock with --no-index and cdp-streams with --no-deps: whatever
    # the lock misses (a new dependency, a new extra) would be missing at run time.
    missing = dependency_closure(runtime_requirements()) - set(lock_pins())
    assert not missing, f"not in deploy/requirements.lock: {sorted(missing)} (make lock)"


def test_the_dockerfile_installs_locked_dependencies_before_copying_sources() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    build = lines[: next(i for i, line in enumerate(lines[1:], 1) if line.startswith("FROM"))]

    def index(prefix: str) -> int:
        return next(i for i, line in enumerate(build) if line.startswith(prefix))

    assert index("COPY deploy/requirements.lock") < index("RUN pip wheel --no-cache-dir --wheel")
    deps = index("RUN pip wheel --no-cache-dir --wheel-dir /wheels/deps -r requirements.lock")
    assert deps < index("COPY streams")
    assert deps < index("COPY pyproject.toml")
    assert "USER 10001:10001" in lines


def test_the_build_context_leaves_out_the_venv_and_git() -> None:
    ignore = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    # Everything is excluded first; only what the image needs comes back in.
    assert rules[0] == "*"
    admitted = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    needed = {"pyproject.toml", "README.md", "streams", "schemas", "deploy/requirements.lock"}
    assert admitted == needed


def test_compose_binds_loopback_only_and_has_no_default_secrets() -> None:
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    assert "name" not in compose  # docker-compose v1 rejects a top-level name
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port
    assert "change-me" not in text
    worker = compose["x-cdp-worker"]["environment"]
    assert worker["CDP_API_TOKEN"].startswith("${CDP_API_TOKEN:?")
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
