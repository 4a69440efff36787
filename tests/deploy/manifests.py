"""Rendering and checking the deployment files: the kustomize overlays, the PrometheusRule built from the
shipped rule files, the compose file against the vendored compose spec schema.

``python -m tests.deploy.manifests`` rewrites deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/
(the test fails while the two differ)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
# The rule files the PrometheusRule carries, in order (compose's Prometheus loads the same files).
RULE_FILES = ("gateway-alerts.yml", "gateway-recording.yml", "gateway-kubernetes-alerts.yml")
# Kinds kubernetes-validate has no schema for (custom resources): checked against the vendored CRD schemas.
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): K8S / "schemas" / "servicemonitor_v1.json",
               ("monitoring.coreos.com/v1", "PrometheusRule"): K8S / "schemas" / "prometheusrule_v1.json"}
KUBERNETES_VERSION = "1.30.0"


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl is not installed: apt-get install kubernetes-client (.ci/run does)")
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    """Every object ``kubectl kustomize`` renders for the overlay."""
    out = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for name in RULE_FILES:
        groups += yaml.safe_load((DEPLOY / "prometheus" / name).read_text())["groups"]
    return groups


def prometheus_rule() -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "llm-gateway", "labels": {"app.kubernetes.io/name": "llm-gateway"}},
            "spec": {"groups": rule_groups()}}


def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    path = CRD_SCHEMAS.get((api_version, kind))
    return json.loads(path.read_text()) if path is not None else None


def write_prometheus_rule() -> None:
    header = ("# Generated from deploy/prometheus/ (" + ", ".join(RULE_FILES) + ") by "
              "`python -m tests.deploy.manifests`;\n# tests/deploy/test_k8s.py fails while they differ.\n")
    text = yaml.safe_dump(prometheus_rule(), sort_keys=False, width=120, allow_unicode=True)
    (K8S / "base" / "prometheusrule.yaml").write_text(header + text)


if __name__ == "__main__":
    write_prometheus_rule()
