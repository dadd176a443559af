#!/usr/bin/env python3
"""Chart checks, run by scripts/check-packaging inside .venv: lint, render (defaults and every
optional feature on), kubernetes-validate --strict (1.28 and the newest it ships), a bad value
rejected by values.schema.json. Writes the rendered manifests to OUT for checkov and promtool."""

import json
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import yaml

CHART = "helm/deploy-watchdog"
OUT = Path(sys.argv[1])
VALIDATE = str(Path(sys.executable).parent / "kubernetes-validate")
# prometheus-operator kinds: kubernetes-validate ships no schema for CRDs.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

ALL_ON = {
    "secrets": {"pagerdutyRoutingKey": "example-routing-key", "slackWebhookUrl": "https://hooks.slack.com/services/T0/B0/x",
                "datadogApiKey": "dd-api", "datadogAppKey": "dd-app"},
    "image": {"digest": "sha256:" + "0" * 64},
    "replicaCount": 2,
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
    "config": {"cluster_name": "production", "providers": {"prometheus": {"url": "http://prometheus.monitoring.svc:9090"}}},
}
NAMESPACED = {"config": {"watch": {"namespaces": ["shop", "payments"]}}}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def render(values, label):
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values)
    manifests = chart.render(values, name="deploy-watchdog", namespace="deploy-watchdog", is_install=True)
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    path = OUT / f"{label}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    kinds = sorted(d["kind"] for d in docs)
    print(f"rendered {label}: {len(docs)} objects ({', '.join(kinds)})")
    return docs, path


def validate(docs, label, versions):
    core = [d for d in docs if d["kind"] not in CRD_KINDS]
    path = OUT / f"{label}-core.yaml"
    path.write_text(yaml.safe_dump_all(core, sort_keys=False))
    for v in versions:
        r = subprocess.run([VALIDATE, "--strict", "--quiet", "-k", v, str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"kubernetes-validate --strict -k {v} {label}:\n{r.stdout}{r.stderr}")
        print(f"kubernetes-validate --strict {v}: {label}: {len(core)} objects valid")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    report = helm.lint(CHART, strict=False, namespace="deploy-watchdog")
    errors = [m for m in report["messages"] if m["severity"] >= 3] + report["errors"]
    if errors:
        fail(f"helm lint: {errors}")
    for m in report["messages"]:
        print(f"helm lint: {['?', 'info', 'warning', 'error'][m['severity']]}: {m['path']}: {m['error']}")
    report = helm.lint(CHART, ALL_ON, namespace="deploy-watchdog")
    if [m for m in report["messages"] if m["severity"] >= 3] + report["errors"]:
        fail(f"helm lint with every option on: {report}")
    print("helm lint: no errors (defaults and every option on)")

    schema_dir = Path(sys.executable).parents[1] / "lib"
    shipped = sorted({p.name.split("-")[0] for p in schema_dir.glob("python3*/site-packages/kubernetes_validate/kubernetes-json-schema/v*")},
                     key=lambda v: tuple(int(x) for x in v.lstrip("v").split(".")))
    versions = ["1.28.0", shipped[-1].lstrip("v")]

    defaults, _ = render(None, "defaults")
    validate(defaults, "defaults", versions)
    all_on, _ = render(ALL_ON, "all-on")
    validate(all_on, "all-on", versions)
    namespaced, _ = render(NAMESPACED, "namespaced")
    validate(namespaced, "namespaced", versions)

    # RBAC: a ClusterRole by default, Roles in the listed namespaces otherwise; nothing more.
    if [d["kind"] for d in defaults].count("ClusterRole") != 1:
        fail("defaults: expected one ClusterRole")
    roles = [d for d in namespaced if d["kind"] == "Role"]
    if "ClusterRole" in [d["kind"] for d in namespaced] or {r["metadata"]["namespace"] for r in roles} != {"shop", "payments", "deploy-watchdog"}:
        fail("namespaced: expected Roles in shop, payments and the lease Role only")
    verbs = {(g, res, v) for d in defaults if d["kind"] in ("ClusterRole", "Role") for rule in d["rules"]
             for g in rule["apiGroups"] for res in rule["resources"] for v in rule["verbs"]}
    allowed = {("apps", "deployments", v) for v in ("get", "list", "watch", "patch")} | \
        {("apps", "replicasets", v) for v in ("get", "list", "watch")} | {("", "pods", v) for v in ("get", "list", "watch")} | \
        {("events.k8s.io", "events", v) for v in ("create", "patch")} | \
        {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update", "patch")}
    if verbs - allowed:
        fail(f"RBAC grants more than it needs: {sorted(verbs - allowed)}")
    print("RBAC: least privilege (ClusterRole by default, Roles when namespaces are listed)")

    # Two replicas elect a leader and replace one pod at a time; one replica is recreated.
    def config_of(docs):
        return yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["config.yaml"])
    def strategy_of(docs):
        return next(d for d in docs if d["kind"] == "Deployment")["spec"]["strategy"]["type"]
    if not config_of(all_on)["leader_election"]["enabled"] or strategy_of(all_on) != "RollingUpdate":
        fail("replicaCount 2: expected leader_election.enabled and a RollingUpdate")
    if config_of(defaults)["leader_election"]["enabled"] or strategy_of(defaults) != "Recreate":
        fail("replicaCount 1: expected no leader election and Recreate")
    if not config_of(all_on)["secrets"]["datadog_api_key_file"]:
        fail("all-on: the Datadog keys are not mounted into the config")
    print("HA: two replicas elect a leader (RollingUpdate); one replica is recreated; Datadog key files wired")

    # The ConfigMap's config, for `deploy-watchdog check-config` (scripts/check-packaging runs it).
    for label, docs in (("defaults", defaults), ("all-on", all_on), ("namespaced", namespaced)):
        cm = next(d for d in docs if d["kind"] == "ConfigMap")
        (OUT / f"{label}-config.yaml").write_text(cm["data"]["config.yaml"])
    rule = next(d for d in all_on if d["kind"] == "PrometheusRule")
    (OUT / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))

    for bad, why in (({"logFormat": "yaml"}, "logFormat"), ({"replicaCount": 9}, "replicaCount"),
                     ({"resources": {"requests": {"memory": "lots"}}}, "memory"), ({"config": {"server": {"listen": "x"}}}, "server")):
        try:
            helm.Chart.load(CHART).validate_schema(bad)
        except helm.HelmValuesError as e:
            print(f"schema rejects {json.dumps(bad)}: {' '.join(str(e).split())[:160]}")
            continue
        fail(f"values.schema.json accepted a bad {why}: {bad}")


if __name__ == "__main__":
    main()
