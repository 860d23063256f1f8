#!/usr/bin/env bash
# Offline validation of everything this repository deploys: no Docker engine and no
# cluster are needed. Installs its tools idempotently (Debian: prometheus for promtool,
# docker-compose; PyPI, in a cached virtualenv: helm-python-sdk, kubernetes-validate,
# check-jsonschema, dockerfile-parse).
#
#   bash deploy/validate.sh [path/to/waba-gateway]
#
# The gateway binary (default target/debug/waba-gateway) loads the configuration the
# chart renders, so that what Kubernetes would run is known to start.
set -euo pipefail
cd "$(dirname "$0")/.."
gateway=${1:-target/debug/waba-gateway}
kube_version=1.30.0

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
venv=$(bash tests/tools/install-validators.sh | tail -n 1)

step() { echo "== $*"; }

step "Prometheus rules: syntax and unit tests"
promtool check rules deploy/prometheus/rules.yml
promtool test rules deploy/prometheus/rules_test.yml
cmp deploy/prometheus/rules.yml helm/waba-gateway/files/rules.yml
cmp deploy/grafana/dashboards/waba-gateway.json helm/waba-gateway/files/waba-gateway.json

step "docker-compose.yml: docker-compose and the compose-spec schema"
docker-compose -f docker-compose.yml config -q
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
promtool check config deploy/prometheus/prometheus.yml >/dev/null 2>&1 || {
  # The compose config names rules by their in-container path; check a local copy.
  tmp=$(mktemp -d); sed "s#/etc/prometheus/#$PWD/deploy/prometheus/#" deploy/prometheus/prometheus.yml > "$tmp/prometheus.yml"
  promtool check config "$tmp/prometheus.yml"; rm -rf "$tmp"; }

step "Grafana dashboard and provisioning"
"$venv/bin/python" - <<'PY'
import json, sys, yaml
dashboard = json.load(open("deploy/grafana/dashboards/waba-gateway.json"))
assert dashboard["uid"] == "waba-gateway" and dashboard["panels"], "dashboard needs a uid and panels"
names = {v["name"] for v in dashboard["templating"]["list"]}
assert {"datasource", "instance", "app"} <= names, names
for panel in dashboard["panels"]:
    assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert all('instance=~"$instance"' in t["expr"] for t in panel["targets"]), panel["title"]
for path in ["deploy/grafana/provisioning/datasources/prometheus.yml", "deploy/grafana/provisioning/dashboards/waba-gateway.yml"]:
    assert yaml.safe_load(open(path))["apiVersion"] == 1, path
print(f"{len(dashboard['panels'])} panels")
PY

step "Dockerfile"
"$venv/bin/python" - <<'PY'
from dockerfile_parse import DockerfileParser
parser = DockerfileParser("deploy/Dockerfile")
instructions = [(i["instruction"], i["value"]) for i in parser.structure]
froms = [v for k, v in instructions if k == "FROM"]
assert len(froms) >= 2, "multi-stage build"
assert any(k == "RUN" and "cargo build --release --locked" in v for k, v in instructions), "cargo build --release --locked"
users = [v for k, v in instructions if k == "USER"]
assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as a non-root user"
assert any(k == "HEALTHCHECK" for k, _ in instructions), "HEALTHCHECK"
print(f"{len(froms)} stages, user {users[-1]}")
PY

step "Helm chart: lint, render with defaults and with every feature, validate"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$venv/bin/python" - "$out" <<'PY'
import json, os, sys
import helm_python
chart_path, out = "helm/waba-gateway", sys.argv[1]
report = helm_python.lint(chart_path, strict=True)
problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
for m in report["messages"]:
    print(f"  lint: {m['path']}: {m['error']}")
if problems:
    sys.exit(f"helm lint --strict: {problems}")
secrets = {"default-secret": "app-secret-Qx81", "default-verify-token": "verify-token-Wm27", "eu-secret": "app-secret-Ep44", "eu-verify-token": "verify-token-Rt93", "eu-previous-secrets": "old-secret-Lk56\n"}
variants = {
    "defaults": {"secret": {"data": {"default-secret": "app-secret-Qx81", "default-verify-token": "verify-token-Wm27"}}},
    "everything": {
        "apps": {"default": {"path": "/webhook"}, "eu": {"path": "/webhook/eu", "rotating": True}},
        "secret": {"data": secrets},
        "persistence": {"enabled": True, "storageClassName": "fast"},
        "ingress": {"enabled": True, "className": "nginx", "tls": [{"secretName": "hooks", "hosts": ["hooks.example.com"]}]},
        "autoscaling": {"enabled": True},
        "podDisruptionBudget": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
        "networkPolicy": {"enabled": True},
        "config": {
            "shutdown": {"lame_duck_ms": 5000, "drain_timeout_ms": 20000},
            "routing": {"split": "item"},
            "kafka": {
                "brokers": "kafka-0.kafka:9093,kafka-1.kafka:9093",
                "cloudevents": True,
                "topics": {"messages.status": "wa.statuses"},
                "librdkafka": {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "waba-gateway"},
            },
        },
        "kafka": {"existingSecret": "kafka-credentials", "secretFiles": {"sasl.password": "password"},
                  "caKey": "ca.crt", "certificateKey": "client.crt", "privateKeyKey": "client.key"},
        "tls": {"existingSecret": "hooks-tls", "clientCaSecret": "meta-client-ca"},
        "serviceAccount": {"create": True, "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/gw"}},
        "otel": {"endpoint": "http://otel-collector.observability:4318", "sampler": "parentbased_traceidratio",
                 "samplerArg": "0.25", "resourceAttributes": "deployment.environment.name=prod",
                 "headersSecret": {"name": "otel-auth", "key": "headers"},
                 "collectorTo": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]},
        "extraEnv": [{"name": "WABA_GATEWAY__LOG__LEVEL", "value": "info"}],
        "envFrom": [{"secretRef": {"name": "waba-gateway-env"}}],
        "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        "podLabels": {"team": "messaging"},
    },
}
# A values file with a key the chart does not know is refused.
try:
    helm_python.Chart.load(chart_path).render({"secret": {"data": {}}, "persistance": {"enabled": True}}, name="gw", namespace="whatsapp", is_install=True)
except Exception as error:
    assert "persistance" in str(error) or "additional" in str(error).lower(), error
    print("  an unknown key is refused:", str(error).splitlines()[0][:120])
else:
    sys.exit("a values file with an unknown key (persistance) was accepted")
chart = helm_python.Chart.load(chart_path)
for variant, values in variants.items():
    rendered = chart.render(values, name="gw", namespace="whatsapp", is_install=True)
    folder = os.path.join(out, variant)
    os.makedirs(folder)
    kinds = []
    for template, manifest in rendered.items():
        if template.endswith("NOTES.txt") or not manifest.strip():
            continue
        name = template.replace("/", "_")
        with open(os.path.join(folder, name), "w") as f:
            f.write(manifest)
        kinds.append(name)
    print(f"  {variant}: {len(kinds)} manifests")
PY
for variant in defaults everything; do
  # Kubernetes' own kinds against the offline schemas of $kube_version; the
  # monitoring.coreos.com kinds are checked below.
  files=$(grep -L -E '^kind: (ServiceMonitor|PrometheusRule)' "$out/$variant"/*.yaml || true)
  # shellcheck disable=SC2086
  "$venv/bin/kubernetes-validate" -k "$kube_version" --strict $files
done
test -s "$out/everything/waba-gateway_templates_statefulset.yaml"
test -s "$out/everything/waba-gateway_templates_servicemonitor.yaml"
"$venv/bin/python" -c '
import json, sys, yaml
config_map = yaml.safe_load(open(sys.argv[1]))
assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
assert json.loads(config_map["data"]["waba-gateway.json"]) == json.load(open(sys.argv[2]))
' "$out/everything/waba-gateway_templates_grafana-dashboard.yaml" deploy/grafana/dashboards/waba-gateway.json
# The PrometheusRule carries rules promtool accepts.
"$venv/bin/python" -c '
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
yaml.safe_dump(rule["spec"], open(sys.argv[2], "w"))
' "$out/everything/waba-gateway_templates_prometheusrule.yaml" "$out/rules-from-chart.yml"
promtool check rules "$out/rules-from-chart.yml"

step "Strimzi KafkaTopic example: what topics apply generates, and well-formed"
"$gateway" topics apply --dry-run --output strimzi --strimzi-cluster kafka --replication-factor 3 \
  --partitions 6 | cmp - deploy/strimzi/kafka-topics.yaml
"$venv/bin/python" - deploy/strimzi/kafka-topics.yaml <<'PY'
import re, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
names = set()
for doc in docs:
    assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2" and doc["kind"] == "KafkaTopic", doc
    name = doc["metadata"]["name"]
    # A Kubernetes resource name: RFC 1123 subdomain.
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 253, name
    assert name not in names, f"{name} twice"
    names.add(name)
    assert doc["metadata"]["labels"]["strimzi.io/cluster"] == "kafka"
    spec = doc["spec"]
    assert re.fullmatch(r"[a-zA-Z0-9._-]{1,249}", spec["topicName"]), spec
    assert spec["partitions"] >= 1 and spec["replicas"] >= 1
    assert int(spec["config"]["max.message.bytes"]) >= 4 * 1024 * 1024
print(f"  {len(docs)} KafkaTopic resources")
PY

step "The configuration the chart renders loads in the gateway"
# A certificate to stand in for the Secrets the chart mounts (TLS, Meta's CA, Kafka's).
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=gateway.test" \
  -addext "subjectAltName=DNS:gateway.test" \
  -keyout "$out/standin.key" -out "$out/standin.crt" 2>/dev/null
for variant in defaults everything; do
  "$venv/bin/python" - "$out/$variant" "$out" <<'PY'
import os, shutil, sys, yaml
folder, out = sys.argv[1], sys.argv[2]
config = yaml.safe_load(open(os.path.join(folder, "waba-gateway_templates_configmap.yaml")))["data"]["config.toml"]
secret = yaml.safe_load(open(os.path.join(folder, "waba-gateway_templates_secret.yaml")))["stringData"]
os.makedirs(os.path.join(folder, "secrets"), exist_ok=True)
for key, value in secret.items():
    open(os.path.join(folder, "secrets", key), "w").write(value)
    # No secret value is ever in a ConfigMap.
    assert value.strip() not in config, f"the secret {key} is in the ConfigMap"
# The Secrets the chart only mounts (Kafka credentials, certificates) stand in as files.
standins = {"password": None, "ca.crt": "standin.crt", "client.crt": "standin.crt",
            "client.key": "standin.key", "tls.crt": "standin.crt", "tls.key": "standin.key"}
for mount in ["/etc/waba-gateway-kafka/", "/etc/waba-gateway-tls/", "/etc/waba-gateway-client-ca/"]:
    if mount not in config:
        continue
    local = os.path.join(folder, os.path.basename(mount.rstrip("/")))
    os.makedirs(local, exist_ok=True)
    for name, source in standins.items():
        if source:
            shutil.copy(os.path.join(out, source), os.path.join(local, name))
        else:
            open(os.path.join(local, name), "w").write("kafka-password-Hv12\n")
    config = config.replace(mount, local + "/")
    print(f"  {os.path.basename(folder)}: mounts {mount}")
assert "kafka-password-Hv12" not in config
config = config.replace("/etc/waba-gateway-secrets/", os.path.join(folder, "secrets") + "/")
open(os.path.join(folder, "config.toml"), "w").write(config)
PY
  # The workload's OTEL_* variables as Kubernetes sets them (a field reference or a Secret
  # as a stand-in value), so that check-config reads them as the gateway will.
  otel_env=$("$venv/bin/python" - "$out/$variant" <<'PY'
import glob, os, re, shlex, sys, yaml
folder = sys.argv[1]
path = (glob.glob(os.path.join(folder, "waba-gateway_templates_statefulset.yaml"))
        + glob.glob(os.path.join(folder, "waba-gateway_templates_deployment.yaml")))[0]
doc = next(d for d in yaml.safe_load_all(open(path)) if d)
env = doc["spec"]["template"]["spec"]["containers"][0].get("env", [])
known = {}
for var in env:
    if "value" in var:
        value = re.sub(r"\$\((\w+)\)", lambda m: known.get(m.group(1), ""), var["value"])
    elif "fieldRef" in var.get("valueFrom", {}):
        value = "gw-0"
    else:
        value = "authorization=Bearer%20standin"
    known[var["name"]] = value
print(" ".join(shlex.quote(f"{k}={v}") for k, v in known.items() if k.startswith("OTEL_")))
PY
)
  # shellcheck disable=SC2086
  eval env $otel_env "\"$gateway\"" check-config --config "$out/$variant/config.toml" >"$out/$variant/effective.toml"
  echo "  $variant: check-config accepts it${otel_env:+ (with the OTEL_* variables the chart sets)}"
  if [ "$variant" = everything ]; then
    grep -qx 'endpoint = "http://otel-collector.observability:4318"' "$out/$variant/effective.toml"
    grep -qx 'sampler_arg = 0.25' "$out/$variant/effective.toml"
    grep -qx 'resource_attributes = "k8s.namespace.name=whatsapp,k8s.pod.name=gw-0,k8s.node.name=gw-0,deployment.environment.name=prod"' "$out/$variant/effective.toml"
    grep -qx 'headers = "\[redacted\]"' "$out/$variant/effective.toml"
  fi
  # The memory limit covers the bound the configuration gives (SECURITY.md).
  "$venv/bin/python" - "$out/$variant" <<'PY'
import glob, os, re, sys, yaml
folder = sys.argv[1]
effective = open(os.path.join(folder, "effective.toml")).read()
bound = int(re.search(r"^# memory bound: (\d+) bytes", effective, re.M).group(1))
units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
workloads = glob.glob(os.path.join(folder, "waba-gateway_templates_deployment.yaml")) + glob.glob(
    os.path.join(folder, "waba-gateway_templates_statefulset.yaml"))
assert workloads, "no workload rendered"
for path in workloads:
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        container = doc["spec"]["template"]["spec"]["containers"][0]
        number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi|)", str(container["resources"]["limits"]["memory"])).groups()
        limit = int(number) * units[unit]
        assert limit >= bound, f"{path}: memory limit {limit} is below the bound {bound}"
        print(f"  {os.path.basename(folder)}: memory limit {limit >> 20} MiB covers the bound {bound >> 20} MiB")
PY
done
echo "deploy validation: all checks passed"
