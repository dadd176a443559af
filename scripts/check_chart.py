#!/usr/bin/env python3
"""Chart checks, run by scripts/check-packaging inside .venv: lint, render in several value sets
(minimal, every option on, namespaced, OpenShift-style, proxy and private CA, an existing Secret
with one key), kubernetes-validate --strict (1.28 and the newest it ships), bad values rejected by
values.schema.json, a silent enforce install refused. Writes the rendered manifests to OUT for
checkov, promtool, check-config and the out-of-cluster RBAC manifest."""

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

SLACK = {"slackWebhookUrl": "https://hooks.slack.com/services/T0/B0/x"}
MINIMAL = {"secrets": SLACK}
ALL_ON = {
    "secrets": {"pagerdutyRoutingKey": "example-routing-key", "slackWebhookUrl": "https://hooks.slack.com/services/T0/B0/x",
                "datadogApiKey": "dd-api", "datadogAppKey": "dd-app"},
    "image": {"digest": "sha256:" + "0" * 64},
    "tests": {"digest": "sha256:" + "1" * 64},
    "replicaCount": 2,
    "serviceMonitor": {"enabled": True, "namespace": "monitoring", "labels": {"release": "kube-prometheus-stack"},
                       "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
                       "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}]},
    "prometheusRule": {"enabled": True, "selector": 'job="deploy-watchdog", namespace="deploy-watchdog"'},
    "dashboards": {"enabled": True, "namespace": "monitoring", "folder": "Deploy Watchdog", "labels": {"team": "platform"}},
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
    "deploymentAnnotations": {"secret.reloader.stakater.com/reload": "deploy-watchdog"},
    "config": {"cluster_name": "production", "providers": {"prometheus": {"url": "http://prometheus.monitoring.svc:9090"}}},
}
NAMESPACED = {"secrets": SLACK, "config": {"watch": {"namespaces": ["shop", "payments"]}}}
# OpenShift's restricted-v2 SCC assigns the UID/GID: the chart must leave them out.
OPENSHIFT = {"secrets": SLACK, "podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}}
PROXY_CA = {
    "secrets": SLACK,
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.corp.example:3128"},
                 {"name": "NO_PROXY", "value": ".svc,.cluster.local,10.0.0.0/8"},
                 {"name": "SSL_CERT_FILE", "value": "/etc/corp-ca/ca-bundle.crt"}],
    "envFrom": [{"configMapRef": {"name": "proxy-settings"}}],
    "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca-bundle"}}],
    "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
}
# checkov sees the escape hatches too.
ALL_ON.update({k: PROXY_CA[k] for k in ("extraEnv", "envFrom", "extraVolumes", "extraVolumeMounts")})
# A Secret of the operator's holding only the PagerDuty key.
EXISTING = {"secrets": {"existingSecret": "pagerduty-only", "existingSecretKeys": {"pagerdutyRoutingKey": "routing-key"}}}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


NOTES = {}


def render(values, label):
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values)
    manifests = chart.render(values, name="deploy-watchdog", namespace="deploy-watchdog", is_install=True)
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            NOTES[label] = text
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


def kinds(docs):
    return [d["kind"] for d in docs]


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind and "helm.sh/hook" not in d["metadata"].get("annotations", {})]
    if len(found) != 1:
        fail(f"expected one {kind}, found {len(found)}")
    return found[0]


def pod_spec(docs):
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def container(docs):
    return pod_spec(docs)["containers"][0]


def config_map(docs):
    """The daemon's ConfigMap (the dashboards' ConfigMap holds no config.yaml)."""
    found = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {})]
    if len(found) != 1:
        fail(f"expected one ConfigMap with config.yaml, found {len(found)}")
    return found[0]


def config_of(docs):
    return yaml.safe_load(config_map(docs)["data"]["config.yaml"])


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for values, label in ((MINIMAL, "minimal"), (ALL_ON, "every option on")):
        report = helm.lint(CHART, values, namespace="deploy-watchdog")
        errors = [m for m in report["messages"] if m["severity"] >= 3] + report["errors"]
        if errors:
            fail(f"helm lint ({label}): {errors}")
        for m in report["messages"]:
            print(f"helm lint ({label}): {['?', 'info', 'warning', 'error'][m['severity']]}: {m['path']}: {m['error']}")
    print("helm lint: no errors (minimal and every option on)")

    # Enforce mode without a sink: the install fails, saying what to set.
    for values in (None, {"secrets": SLACK, "config": {"notify": {"slack": {"enabled": False}}}}):
        try:
            render(values, "silent")
        except Exception as e:  # helm's template error
            text = " ".join(str(e).split())
            for needle in ("no notification sink", "secrets.pagerdutyRoutingKey", "secrets.slackWebhookUrl", "config.notify.allow_silent=true"):
                if needle not in text:
                    fail(f"silent install: the error does not say {needle!r}: {text[:400]}")
            continue
        fail(f"an enforce install without a notification sink rendered: {values}")
    print("silent enforce install refused (no key; a key for a disabled sink), naming what to set")
    for values in ({"config": {"notify": {"allow_silent": True}}}, {"config": {"mode": "dry_run"}},
                   {"extraEnv": [{"name": "DEPLOY_WATCHDOG_SLACK_WEBHOOK_URL", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}):
        render(values, "allowed")
    print("allow_silent, dry_run and keys from extraEnv install")

    schema_dir = Path(sys.executable).parents[1] / "lib"
    shipped = sorted({p.name.split("-")[0] for p in schema_dir.glob("python3*/site-packages/kubernetes_validate/kubernetes-json-schema/v*")},
                     key=lambda v: tuple(int(x) for x in v.lstrip("v").split(".")))
    versions = ["1.28.0", shipped[-1].lstrip("v")]

    sets = {}
    for label, values in (("minimal", MINIMAL), ("all-on", ALL_ON), ("namespaced", NAMESPACED),
                          ("openshift", OPENSHIFT), ("proxy-ca", PROXY_CA), ("existing-secret", EXISTING)):
        sets[label], _ = render(values, label)
        validate(sets[label], label, versions)
    minimal, all_on, namespaced = sets["minimal"], sets["all-on"], sets["namespaced"]

    # RBAC: a ClusterRole by default, Roles in the listed namespaces otherwise; nothing more.
    if kinds(minimal).count("ClusterRole") != 1:
        fail("minimal: expected one ClusterRole")
    roles = [d for d in namespaced if d["kind"] == "Role"]
    if "ClusterRole" in kinds(namespaced) or {r["metadata"]["namespace"] for r in roles} != {"shop", "payments", "deploy-watchdog"}:
        fail("namespaced: expected Roles in shop, payments and the lease Role only")
    verbs = {(g, res, v) for d in minimal if d["kind"] in ("ClusterRole", "Role") for rule in d["rules"]
             for g in rule["apiGroups"] for res in rule["resources"] for v in rule["verbs"]}
    allowed = {("apps", "deployments", v) for v in ("get", "list", "watch", "patch")} | \
        {("apps", "replicasets", v) for v in ("get", "list", "watch")} | {("", "pods", v) for v in ("get", "list", "watch")} | \
        {("events.k8s.io", "events", v) for v in ("create", "patch")} | \
        {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update", "patch")}
    if verbs - allowed:
        fail(f"RBAC grants more than it needs: {sorted(verbs - allowed)}")
    print("RBAC: least privilege (ClusterRole by default, Roles when namespaces are listed)")

    # Two replicas elect a leader, replace one pod at a time and spread softly; one is recreated.
    def strategy_of(docs):
        return one(docs, "Deployment")["spec"]["strategy"]["type"]
    if not config_of(all_on)["leader_election"]["enabled"] or strategy_of(all_on) != "RollingUpdate":
        fail("replicaCount 2: expected leader_election.enabled and a RollingUpdate")
    if config_of(minimal)["leader_election"]["enabled"] or strategy_of(minimal) != "Recreate":
        fail("replicaCount 1: expected no leader election and Recreate")
    spec = pod_spec(all_on)
    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    if not anti.get("preferredDuringSchedulingIgnoredDuringExecution") or anti.get("requiredDuringSchedulingIgnoredDuringExecution"):
        fail(f"replicaCount 2: expected a soft pod anti-affinity, got {spec.get('affinity')}")
    if [c["whenUnsatisfiable"] for c in spec.get("topologySpreadConstraints", [])] != ["ScheduleAnyway"]:
        fail(f"replicaCount 2: expected a soft topology spread, got {spec.get('topologySpreadConstraints')}")
    if "affinity" in pod_spec(minimal) or "topologySpreadConstraints" in pod_spec(minimal):
        fail("replicaCount 1: no affinity or spread expected")
    if not config_of(all_on)["secrets"]["datadog_api_key_file"]:
        fail("all-on: the Datadog keys are not mounted into the config")
    print("HA: two replicas elect a leader (RollingUpdate) and spread softly over nodes and zones; one replica is recreated")

    # Resources hold the benchmark's 1,000 watched rollouts (150.5 MiB peak RSS, ~412 millicores).
    def mebibytes(q):
        return int(q[:-2]) * {"Mi": 1, "Gi": 1024}[q[-2:]]
    res = container(minimal)["resources"]
    if mebibytes(res["requests"]["memory"]) < 151 or mebibytes(res["limits"]["memory"]) < 1.5 * 151:
        fail(f"resources below the benchmark's 1,000 watched rollouts: {res}")
    if int(res["limits"]["cpu"].rstrip("m")) < 412 * 2:
        fail(f"cpu limit below twice the benchmark's 412 millicores: {res}")
    print(f"resources: {res}")

    # OpenShift: no fixed UID/GID, everything else restricted.
    pod_sc, c_sc = pod_spec(sets["openshift"])["securityContext"], container(sets["openshift"])["securityContext"]
    if {"runAsUser", "runAsGroup", "fsGroup"} & set(pod_sc) or not pod_sc.get("runAsNonRoot"):
        fail(f"openshift: the pod's securityContext still names IDs: {pod_sc}")
    if c_sc.get("allowPrivilegeEscalation") is not False or c_sc["capabilities"]["drop"] != ["ALL"]:
        fail(f"openshift: the container's securityContext is not restricted: {c_sc}")
    if pod_spec(minimal)["securityContext"].get("runAsUser") != 65532:
        fail("minimal: expected runAsUser 65532")
    print(f"openshift: pod securityContext {pod_sc}")

    # Proxy and private CA: the environment, envFrom and the mounted bundle reach the container.
    c = container(sets["proxy-ca"])
    env = {e["name"]: e.get("value") for e in c["env"]}
    if env.get("HTTPS_PROXY") is None or env.get("SSL_CERT_FILE") != "/etc/corp-ca/ca-bundle.crt" or "POD_NAME" not in env:
        fail(f"proxy-ca: env {env}")
    if c.get("envFrom") != PROXY_CA["envFrom"] or "/etc/corp-ca" not in [m["mountPath"] for m in c["volumeMounts"]]:
        fail("proxy-ca: envFrom or the CA mount missing")
    if "corp-ca" not in [v["name"] for v in pod_spec(sets["proxy-ca"])["volumes"]]:
        fail("proxy-ca: the CA volume is missing")
    print("proxy-ca: HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE, envFrom and the CA volume reach the pod")

    # An existing Secret with one key: every key optional, mounted under fixed names.
    existing = sets["existing-secret"]
    if "Secret" in kinds(existing):
        fail("existing-secret: the chart must not create a Secret")
    vol = next(v for v in pod_spec(existing)["volumes"] if v["name"] == "secrets")["secret"]
    if vol["secretName"] != "pagerduty-only" or not vol["optional"] or \
            {"key": "routing-key", "path": "pagerduty-routing-key"} not in vol["items"]:
        fail(f"existing-secret: volume {vol}")
    files = config_of(existing)["secrets"]
    if files["pagerduty_routing_key_file"] != "/etc/deploy-watchdog/secrets/pagerduty-routing-key" or not files["slack_webhook_url_file"]:
        fail(f"existing-secret: config secrets {files}")
    print("existing Secret: every key optional (one key present), mounted under fixed names")

    # Monitoring: the ServiceMonitor's namespace and relabelings; the rules use the selector only.
    sm = one(all_on, "ServiceMonitor")
    if sm["metadata"]["namespace"] != "monitoring" or not sm["spec"]["endpoints"][0].get("metricRelabelings") \
            or not sm["spec"]["endpoints"][0].get("relabelings"):
        fail(f"ServiceMonitor: {sm}")
    rule = one(all_on, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    if not all(ALL_ON["prometheusRule"]["selector"] in e for e in exprs):
        fail(f"PrometheusRule: every expression should use the selector: {exprs}")
    rendered_default = render({**MINIMAL, "prometheusRule": {"enabled": True}}, "rule-default")[0]
    default_exprs = [r["expr"] for d in rendered_default if d["kind"] == "PrometheusRule"
                     for g in d["spec"]["groups"] for r in g["rules"]]
    if any("job=" in e for e in default_exprs) or not all('namespace="deploy-watchdog"' in e for e in default_exprs):
        fail(f"PrometheusRule without a ServiceMonitor must not depend on its job label: {default_exprs}")
    (OUT / "rules.yaml").write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    (OUT / "rules-default.yaml").write_text(yaml.safe_dump(
        next(d for d in rendered_default if d["kind"] == "PrometheusRule")["spec"], sort_keys=False))
    print("monitoring: ServiceMonitor namespace and relabelings; PrometheusRule selector, not tied to the ServiceMonitor")

    # helm test: a hook pod asking /readyz through the Service; NOTES never chains port-forward.
    tests = [d for d in minimal if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    if len(tests) != 1 or "/readyz" not in " ".join(tests[0]["spec"]["containers"][0]["command"]):
        fail("expected one helm test pod asking /readyz")
    for label, notes in NOTES.items():
        if "&&" in notes:
            fail(f"NOTES ({label}) chains commands with &&: {notes}")
    print("helm test: a pod asking /readyz; NOTES: no `port-forward … &&`")

    # The ConfigMap's config, for `deploy-watchdog check-config` (scripts/check-packaging runs it).
    for label, docs in sets.items():
        (OUT / f"{label}-config.yaml").write_text(config_map(docs)["data"]["config.yaml"])

    # Grafana's dashboard sidecar: the label (and value), namespace and folder annotation it
    # looks for; the dashboards as they are in the chart (JSON, not templated); none by default.
    boards = [d for d in all_on if d["kind"] == "ConfigMap" and d is not config_map(all_on)]
    shipped = {p.name: json.loads(p.read_text()) for p in sorted(Path(CHART, "dashboards").glob("*.json"))}
    if len(boards) != 1 or not shipped:
        fail(f"all-on: expected one dashboards ConfigMap and dashboards in the chart, got {len(boards)}, {list(shipped)}")
    meta = boards[0]["metadata"]
    if meta["namespace"] != "monitoring" or meta["labels"].get("grafana_dashboard") != "1" \
            or meta["labels"].get("team") != "platform" or meta.get("annotations") != {"grafana_folder": "Deploy Watchdog"}:
        fail(f"dashboards ConfigMap metadata: {meta}")
    if {k: json.loads(v) for k, v in boards[0]["data"].items()} != shipped:
        fail("the dashboards ConfigMap does not hold the chart's dashboards/*.json as they are")
    custom = render({**MINIMAL, "dashboards": {"enabled": True, "label": "example.com/dashboard", "labelValue": "yes",
                                               "folderAnnotation": "k8s-sidecar-target-directory", "folder": "ops"}}, "dashboards-custom")[0]
    validate(custom, "dashboards-custom", versions)
    meta = next(d for d in custom if d["kind"] == "ConfigMap" and "config.yaml" not in d["data"])["metadata"]
    if meta["namespace"] != "deploy-watchdog" or meta["labels"].get("example.com/dashboard") != "yes" \
            or meta["annotations"] != {"k8s-sidecar-target-directory": "ops"}:
        fail(f"dashboards ConfigMap with a custom label and folder annotation: {meta}")
    if [d for d in minimal if d["kind"] == "ConfigMap" and "config.yaml" not in d.get("data", {})]:
        fail("minimal: no dashboards ConfigMap expected by default")
    print(f"dashboards: one ConfigMap for Grafana's sidecar ({', '.join(shipped)}), label, namespace and folder annotation as set")

    for bad, why in (({"logFormat": "yaml"}, "logFormat"), ({"replicaCount": 9}, "replicaCount"),
                     ({"resources": {"requests": {"memory": "lots"}}}, "memory"), ({"config": {"server": {"listen": "x"}}}, "server"),
                     ({"extraEnv": [{"value": "x"}]}, "extraEnv without a name"),
                     ({"secrets": {"existingSecretKeys": ["pagerduty-routing-key"]}}, "existingSecretKeys as a list"),
                     ({"prometheusRule": {"selector": "{job=\"x\"}"}}, "a selector with braces"),
                     ({"podSecurityContext": {"runAsUser": "root"}}, "runAsUser"),
                     ({"dashboards": {"label": "grafana dashboard"}}, "a dashboards label that is no label key"),
                     ({"dashboards": {"folderAnnotation": "-folder"}}, "a folder annotation that is no key")):
        try:
            helm.Chart.load(CHART).validate_schema(bad)
        except helm.HelmValuesError as e:
            print(f"schema rejects {json.dumps(bad)}: {' '.join(str(e).split())[:160]}")
            continue
        fail(f"values.schema.json accepted a bad {why}: {bad}")


if __name__ == "__main__":
    main()
