"""The kustomize overlays render with ``kubectl kustomize``, every object validates with kubernetes-validate
(strict: an unknown field fails), custom resources against the vendored CRD schemas, and the manifests hold
what the deployment needs: probes, non-root pods, the real CLI verbs, the shipped alerts."""

from __future__ import annotations

import copy
import shlex
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer.main
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

from gateway.cli import app
from tests.deploy.manifests import KUBERNETES_VERSION, OVERLAYS, crd_schema, prometheus_rule, render

Obj = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(request.param)


def validate(obj: Obj) -> None:
    """kubernetes-validate --strict; a kind it has no schema for must have a vendored CRD schema."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except SchemaNotFoundError:
        schema = crd_schema(obj["apiVersion"], obj["kind"])
        if schema is None:
            raise AssertionError(f"no schema for {obj['apiVersion']} {obj['kind']}: vendor its CRD schema") from None
        jsonschema.Draft7Validator(schema).validate(obj)


def by_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_templates(objs: list[Obj]) -> dict[str, Obj]:
    """Every pod template (metadata and spec), by the name of its workload."""
    found = {}
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            found[o["metadata"]["name"]] = o["spec"]["template"]
        elif o["kind"] == "CronJob":
            found[o["metadata"]["name"]] = o["spec"]["jobTemplate"]["spec"]["template"]
    return found


def pod_specs(objs: list[Obj]) -> dict[str, Obj]:
    return {name: t["spec"] for name, t in pod_templates(objs).items()}


def test_every_object_is_valid(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "CronJob", "Job",
            "ServiceMonitor", "PrometheusRule", "NetworkPolicy"} <= {o["kind"] for o in objs}
    for obj in objs:
        validate(obj)


def test_strict_validation_rejects_what_the_api_server_would(rendered: tuple[str, list[Obj]]) -> None:
    """The validators are not a formality: an unknown field, a wrong type, a bad rule duration all fail."""
    _, objs = rendered
    deployment = copy.deepcopy(by_kind(objs, "Deployment")["llm-gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    hpa = copy.deepcopy(by_kind(objs, "HorizontalPodAutoscaler")["llm-gateway"])
    hpa["spec"]["minReplicas"] = "three"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)
    rule = copy.deepcopy(by_kind(objs, "PrometheusRule")["llm-gateway"])
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate(rule)
    monitor = copy.deepcopy(by_kind(objs, "ServiceMonitor")["llm-gateway"])
    monitor["spec"]["endpoints"][0]["prot"] = "metrics"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def _check_cli(args: list[str]) -> None:
    """``args`` (after ``gateway``) name a real verb of the gateway CLI with options it accepts."""
    command: Any = typer.main.get_command(app)  # typer's own click: groups have ``commands``
    rest = list(args)
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    assert not hasattr(command, "commands"), f"gateway {' '.join(args)}: not a verb"
    command.make_context(" ".join(args), rest)  # raises on an unknown option or a bad value


def test_containers_run_real_gateway_verbs(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    checked = 0
    for spec in pod_specs(objs).values():
        for c in spec["containers"]:
            if not c["image"].split("/")[-1].startswith("llm-gateway"):
                continue
            if c.get("command", [])[:2] == ["sh", "-c"]:
                for part in c["command"][2].split("&&"):
                    words = shlex.split(part)
                    assert words[0] == "gateway"
                    _check_cli(words[1:])
                    checked += 1
            else:
                assert "command" not in c  # the image's entry point is `gateway`
                _check_cli(c["args"])
                checked += 1
    assert checked >= 4


def test_pods_run_as_non_root_with_limits(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    for name, spec in pod_specs(objs).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in c["resources"]["limits"] and "cpu" in c["resources"]["requests"], name


def test_gateway_deployment_scaling_and_monitoring(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    gateway = by_kind(objs, "Deployment")["llm-gateway"]
    spec = gateway["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["args"] == ["serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {t["topologyKey"] for t in spec["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    selector = gateway["spec"]["selector"]["matchLabels"]
    assert by_kind(objs, "PodDisruptionBudget")["llm-gateway"]["spec"]["selector"]["matchLabels"] == selector
    metrics = by_kind(objs, "HorizontalPodAutoscaler")["llm-gateway"]["spec"]["metrics"]
    assert {m["type"] for m in metrics} == {"Resource", "Pods"}
    assert [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"] == ["gateway_inflight_requests"]
    monitor = by_kind(objs, "ServiceMonitor")["llm-gateway"]["spec"]
    service = by_kind(objs, "Service")["llm-gateway"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    config = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("llm-gateway"))
    assert config["data"]["GATEWAY_LEDGER_WRITERS"] == "0"  # the writer Deployment does it
    assert config["data"]["GATEWAY_METRICS_ADDRESS"].endswith(":9090")


def test_writer_and_single_stripe_sync(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    writer = by_kind(objs, "Deployment")["llm-gateway-ledger-writer"]
    assert writer["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["billing", "writer"]
    sync = by_kind(objs, "CronJob")["llm-gateway-stripe-sync"]
    assert sync["spec"]["concurrencyPolicy"] == "Forbid"
    pod = sync["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["billing", "sync"]
    # Only the sync job reads the Stripe key, so no serving pod runs a sync of its own.
    for name, spec in pod_specs(objs).items():
        refs = {e["secretRef"]["name"].rsplit("-", 1)[0] if "stripe-" in e["secretRef"]["name"] else
                e["secretRef"]["name"] for c in spec["containers"] for e in c.get("envFrom", []) if "secretRef" in e}
        assert ("llm-gateway-stripe" in refs) == (name == "llm-gateway-stripe-sync"), name


def test_prometheus_rule_is_the_shipped_rules(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    rule = by_kind(objs, "PrometheusRule")["llm-gateway"]
    assert rule["spec"] == prometheus_rule()["spec"], "run python -m tests.deploy.manifests"
    records = [r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r]
    assert "gateway:inflight_requests:sum" in records


def test_network_policies_cover_every_gateway_pod(rendered: tuple[str, list[Obj]]) -> None:
    _, objs = rendered
    policies = by_kind(objs, "NetworkPolicy").values()
    for name, template in pod_templates(objs).items():
        labels = template["metadata"]["labels"]
        if labels.get("app.kubernetes.io/name") != "llm-gateway":
            continue
        types = {t for p in policies if _selects(p["spec"]["podSelector"], labels) for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, name


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def _references(objs: list[Obj]) -> tuple[set[str], set[str]]:
    configs, secrets = set(), set()
    for spec in pod_specs(objs).values():
        for c in spec["containers"]:
            for e in c.get("envFrom", []):
                (configs if "configMapRef" in e else secrets).add((e.get("configMapRef") or e["secretRef"])["name"])
            for e in c.get("env", []):
                if "valueFrom" in e:
                    secrets.add(e["valueFrom"]["secretKeyRef"]["name"])
    return configs, secrets


def test_dev_overlay_is_self_contained() -> None:
    objs = render("dev")
    configs, secrets = _references(objs)
    assert configs <= set(by_kind(objs, "ConfigMap")) and secrets <= set(by_kind(objs, "Secret"))
    assert {"redis", "stripe-fake"} <= set(by_kind(objs, "Deployment"))
    assert {"postgres", "workersim"} <= set(by_kind(objs, "StatefulSet"))
    workersim = by_kind(objs, "StatefulSet")["workersim"]
    assert workersim["spec"]["replicas"] == 3
    assert workersim["spec"]["template"]["spec"]["containers"][0]["args"][0] == "sim"
    config = by_kind(objs, "ConfigMap")["llm-gateway"]["data"]
    assert config["GATEWAY_WORKERS"].split(",") == [f"http://workersim-{i}.workersim:8000" for i in range(3)]


def test_prod_overlay_takes_secrets_by_reference_only() -> None:
    objs = render("prod")
    assert by_kind(objs, "Secret") == {}
    workloads = set(by_kind(objs, "Deployment")) | set(by_kind(objs, "StatefulSet"))
    assert not {"redis", "postgres", "workersim"} & workloads
    _, secrets = _references(objs)
    assert secrets == {"llm-gateway", "llm-gateway-stripe"}
    gateway = by_kind(objs, "Deployment")["llm-gateway"]["spec"]["template"]["spec"]["containers"][0]
    required = {e["name"] for e in gateway["env"] if not e["valueFrom"]["secretKeyRef"].get("optional")}
    assert required == {"GATEWAY_DATABASE_URL", "GATEWAY_REDIS_URL"}
    assert gateway["image"].startswith("registry.example.com/llm-gateway:")
