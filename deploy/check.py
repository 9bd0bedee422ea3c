#!/usr/bin/env python3
"""Checks behind deploy/check.sh that need a parser rather than an external tool.

    check.py dashboard-rules OUT.yml   write every Prometheus query of the Grafana dashboards
                                       into a rules file for `promtool check rules`
    check.py metric-names              every metric used by dashboards, alerts and alert tests
                                       must be listed in deploy/metrics.txt (needs promql_parser)
    check.py k8s-policy RENDERED.yml   probes, resources, non-root, PDB/Service/HPA coverage
    check.py files                     compose secrets, Grafana provisioning, Loki and Promtail

Run from the repository root. Exit status 1 on any problem; every problem is printed.
"""

import json
import pathlib
import re
import sys

import yaml

DEPLOY = pathlib.Path("deploy")
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROM_UID, LOKI_UID = "prometheus", "loki"
# Series that Prometheus itself generates for every scrape target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                        "scrape_series_added", "scrape_samples_post_metric_relabeling"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
APP_SERVICES = {"gateway": 8080, "auth": 3001, "users": 3003, "chat": 3002, "notifications": 3004, "files": 3005}

problems = []


def problem(msg):
    problems.append(msg)
    print(f"  problem: {msg}", file=sys.stderr)


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --------------------------------------------------------------------------- dashboards

def grafana_to_promql(expr):
    """Replace Grafana's template variables by values that keep the query valid PromQL."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    expr = re.sub(r"\$\{__(rate_interval|interval|range)(:[^}]*)?\}", "5m", expr)
    expr = re.sub(r"\$\{\w+(:[^}]*)?\}|\$\w+|\[\[\w+\]\]", "var", expr)
    return expr


def dashboard_queries():
    """Yield (file, where, kind, promql) for every Prometheus query in the dashboards.
    kind is 'expr' for panel targets, 'label_values' for the metric of a variable query."""
    uids = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        try:
            board = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            problem(f"{path}: invalid JSON: {e}")
            continue
        uid = board.get("uid")
        if not uid or not board.get("title"):
            problem(f"{path}: dashboard needs a uid and a title")
        elif uid in uids:
            problem(f"{path}: uid {uid!r} also used by {uids[uid]}")
        uids[uid] = path
        ids = set()
        panels = list(board.get("panels", []))
        for p in list(panels):
            panels.extend(p.get("panels", []))  # panels inside collapsed rows
        for p in panels:
            if p.get("id") in ids:
                problem(f"{path}: panel id {p.get('id')} is used twice")
            ids.add(p.get("id"))
            if p.get("type") == "row":
                continue
            panel_ds = (p.get("datasource") or {}).get("uid")
            if panel_ds not in (PROM_UID, LOKI_UID):
                problem(f"{path}: panel {p.get('title')!r} uses unknown data source {panel_ds!r}")
            if not p.get("targets"):
                problem(f"{path}: panel {p.get('title')!r} has no query")
            for t in p.get("targets", []):
                ds = (t.get("datasource") or {}).get("uid", panel_ds)
                where = f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}"
                if not t.get("expr", "").strip():
                    problem(f"{path}: {where}: empty expr")
                elif ds == PROM_UID:
                    yield path, where, "expr", grafana_to_promql(t["expr"])
                elif ds != LOKI_UID:
                    problem(f"{path}: {where}: unknown data source {ds!r}")
        for v in board.get("templating", {}).get("list", []):
            if v.get("type") != "query":
                continue
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else (q or "")
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
            if m:
                yield path, f"variable {v.get('name')}", "label_values", grafana_to_promql(m.group(1))
            elif q:
                problem(f"{path}: variable {v.get('name')}: unsupported query {q!r}")
    if not uids:
        problem(f"no dashboards found in {DASHBOARDS}")


def cmd_dashboard_rules(out):
    groups = {}
    for path, where, _kind, expr in dashboard_queries():
        rules = groups.setdefault(path.name, [])
        stem = re.sub(r"\W", "_", path.stem)
        rules.append({"record": f"dashboard_check:{stem}:q{len(rules) + 1}", "expr": expr,
                      "labels": {"where": where}})
    doc = {"groups": [{"name": name, "rules": rules} for name, rules in groups.items()]}
    pathlib.Path(out).write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    print(f"  {sum(len(r) for r in groups.values())} dashboard queries written to {out}")


# --------------------------------------------------------------------------- metric names

def selector_names(node):
    import promql_parser as pp
    if node is None:
        return
    if isinstance(node, pp.VectorSelector):
        if node.name:
            yield node.name
        for m in node.matchers.matchers:
            if m.name == "__name__" and m.op == pp.MatchOp.Equal:
                yield m.value
    elif isinstance(node, pp.MatrixSelector):
        yield from selector_names(node.vector_selector)
    elif isinstance(node, pp.BinaryExpr):
        yield from selector_names(node.lhs)
        yield from selector_names(node.rhs)
    elif isinstance(node, pp.AggregateExpr):
        yield from selector_names(node.expr)
        yield from selector_names(node.param)
    elif isinstance(node, pp.Call):
        for a in node.args:
            yield from selector_names(a)
    elif isinstance(node, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        yield from selector_names(node.expr)


def cmd_metric_names():
    import promql_parser as pp
    known = {l.strip() for l in (DEPLOY / "metrics.txt").read_text().splitlines() if l.strip()}
    bad = [n for n in known if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", n)]
    if bad:
        problem(f"deploy/metrics.txt: not metric names: {bad}")

    def allowed(name):
        if name in known or name in PROMETHEUS_SYNTHETIC:
            return True
        return any(name.endswith(s) and name[: -len(s)] in known for s in HISTOGRAM_SUFFIXES)

    sources = []  # (where, promql)
    for path, where, _kind, expr in dashboard_queries():
        sources.append((f"{path}: {where}", expr))
    for g in load_yaml_docs(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"]:
        for r in g["rules"]:
            sources.append((f"alerts.yml: {r.get('alert') or r.get('record')}", r["expr"]))
    for t in load_yaml_docs(DEPLOY / "prometheus" / "alerts_test.yml")[0]["tests"]:
        for s in t.get("input_series", []):
            sources.append((f"alerts_test.yml: {t.get('name')}", s["series"]))

    used = set()
    for where, expr in sources:
        try:
            names = set(selector_names(pp.parse(expr)))
        except Exception as e:  # the parser raises plain exceptions on bad syntax
            problem(f"{where}: cannot parse {expr!r}: {e}")
            continue
        if not names:
            problem(f"{where}: query uses no metric: {expr!r}")
        for n in sorted(names):
            used.add(n)
            if not allowed(n):
                problem(f"{where}: metric {n!r} is not in deploy/metrics.txt")
    def base(name):
        for s in HISTOGRAM_SUFFIXES:
            if name.endswith(s) and name[: -len(s)] in known:
                return name[: -len(s)]
        return name

    unused = sorted(known - {base(n) for n in used})
    print(f"  {len(sources)} queries, {len(used)} distinct series names, all known"
          if not problems else f"  {len(sources)} queries checked")
    if unused:
        print(f"  note: listed but not used by any dashboard or alert: {', '.join(unused)}")


# --------------------------------------------------------------------------- kubernetes

def cmd_k8s_policy(rendered):
    docs = load_yaml_docs(rendered)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    if set(deployments) != set(APP_SERVICES):
        problem(f"k8s: expected Deployments {sorted(APP_SERVICES)}, found {sorted(deployments)}")

    def selects(selector, labels):
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    for name, d in deployments.items():
        pod = d["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        if not selects(d["spec"]["selector"].get("matchLabels"), labels):
            problem(f"k8s: Deployment {name}: selector does not match its pod labels")
        psc = pod["spec"].get("securityContext", {})
        for c in pod["spec"]["containers"]:
            where = f"k8s: Deployment {name} container {c['name']}"
            csc = c.get("securityContext", {})
            if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
                problem(f"{where}: runAsNonRoot is not set")
            if csc.get("allowPrivilegeEscalation") is not False:
                problem(f"{where}: allowPrivilegeEscalation must be false")
            if not csc.get("readOnlyRootFilesystem"):
                problem(f"{where}: readOnlyRootFilesystem is not set")
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                got = c.get(probe, {}).get("httpGet", {}).get("path")
                if got != path:
                    problem(f"{where}: {probe} must GET {path} (has {got!r})")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        problem(f"{where}: resources.{part}.{r} missing")
            ports = [p["containerPort"] for p in c.get("ports", [])]
            if APP_SERVICES.get(name) not in ports:
                problem(f"{where}: must expose port {APP_SERVICES.get(name)} (has {ports})")
            if c.get("args", [None, None])[:2] != ["serve", name]:
                problem(f"{where}: args must be ['serve', '{name}']")
        for kind in ("Service", "PodDisruptionBudget"):
            if not any(selects((o["spec"].get("selector") or {}).get("matchLabels", o["spec"].get("selector")), labels)
                       for o in by_kind.get(kind, [])):
                problem(f"k8s: no {kind} selects Deployment {name}")
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}
    for name in ("gateway", "chat"):
        if name not in hpa_targets:
            problem(f"k8s: no HorizontalPodAutoscaler for {name}")
        elif "replicas" in deployments.get(name, {}).get("spec", {}):
            problem(f"k8s: Deployment {name} is HPA-managed and must not set replicas")
    ingresses = by_kind.get("Ingress", [])
    if not ingresses:
        problem("k8s: no Ingress")
    for ing in ingresses:
        ann = ing["metadata"].get("annotations", {})
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            if ann.get(f"nginx.ingress.kubernetes.io/{key}") != "3600":
                problem(f"k8s: Ingress {ing['metadata']['name']}: {key} must be \"3600\" for WebSockets")
    for s in by_kind.get("Secret", []):
        problem(f"k8s: Secret {s['metadata']['name']} must not be part of the kustomization")
    print(f"  {len(docs)} resources: {', '.join(f'{len(v)} {k}' for k, v in sorted(by_kind.items()))}")


# --------------------------------------------------------------------------- other files

SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$", re.I)


def cmd_files():
    # compose: secrets only as ${VAR}; .env.example covers every ${VAR:?} the file requires
    compose_text = (DEPLOY / "compose.yaml").read_text()
    compose = yaml.safe_load(compose_text)
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict((e.split("=", 1) + [""])[:2] for e in env)
        for k, v in env.items():
            if SECRET_KEY.search(k) and v and not str(v).startswith("${"):
                problem(f"compose.yaml: service {name}: {k} has a literal value; use ${{VAR}}")
            if re.search(r"://[^:/@\s]+:[^$@\s]+@", str(v or "")):
                problem(f"compose.yaml: service {name}: {k} embeds a literal password")
    example = {l.split("=", 1)[0].strip() for l in (DEPLOY / ".env.example").read_text().splitlines()
               if "=" in l and not l.lstrip().startswith("#")}
    for var in sorted(set(re.findall(r"\$\{(\w+):\?", compose_text))):
        if var not in example:
            problem(f"compose.yaml requires ${{{var}}} but deploy/.env.example does not define it")
    mounts = " ".join(str(v) for s in compose["services"].values() for v in s.get("volumes", []))
    for needed in ("./prometheus", "./grafana/provisioning", "./grafana/dashboards",
                   "./loki/config.yaml", "./promtail/config.yaml", "./postgres/init.sh"):
        if needed not in mounts:
            problem(f"compose.yaml: {needed} is not mounted into any service")

    # grafana provisioning: the data source uids the dashboards rely on
    ds = load_yaml_docs(DEPLOY / "grafana/provisioning/datasources/datasources.yaml")[0]["datasources"]
    got = {(d["type"], d["uid"]) for d in ds}
    for want in (("prometheus", PROM_UID), ("loki", LOKI_UID)):
        if want not in got:
            problem(f"grafana datasources: missing {want[0]} data source with uid {want[1]!r}")
    prov = load_yaml_docs(DEPLOY / "grafana/provisioning/dashboards/dashboards.yaml")[0]["providers"]
    if not any(p.get("options", {}).get("path") == "/etc/grafana/dashboards" for p in prov):
        problem("grafana dashboard provider must read /etc/grafana/dashboards (the compose mount)")

    # loki: the pieces a single-binary Loki 3 cannot start without
    loki = load_yaml_docs(DEPLOY / "loki/config.yaml")[0]
    for key in ("server", "common", "schema_config", "limits_config"):
        if key not in loki:
            problem(f"loki/config.yaml: missing {key}")
    if not any(c.get("store") == "tsdb" and c.get("schema") == "v13" for c in loki["schema_config"]["configs"]):
        problem("loki/config.yaml: use the tsdb store with schema v13")
    if not loki.get("limits_config", {}).get("allow_structured_metadata"):
        problem("loki/config.yaml: allow_structured_metadata is needed by the promtail pipeline")

    # promtail: pushes to loki; JSON stage extracts level, service and request_id
    pt = load_yaml_docs(DEPLOY / "promtail/config.yaml")[0]
    if not any("loki:3100/loki/api/v1/push" in c.get("url", "") for c in pt.get("clients", [])):
        problem("promtail/config.yaml: no client pushing to http://loki:3100/loki/api/v1/push")
    for job in pt.get("scrape_configs", []):
        stages = job.get("pipeline_stages", [])
        extracted = {k for s in stages for k in (s.get("json") or {}).get("expressions", {})}
        for need in ("level", "service", "request_id"):
            if need not in extracted:
                problem(f"promtail job {job.get('job_name')}: json stage does not extract {need}")
        label_names = {k for s in stages for k in (s.get("labels") or {})}
        for high_card in ("request_id", "trace_id", "user_id"):
            if high_card in label_names:
                problem(f"promtail job {job.get('job_name')}: {high_card} must not be a label (cardinality)")
    print("  compose secrets, grafana provisioning, loki and promtail: ok" if not problems else "")


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    {"dashboard-rules": cmd_dashboard_rules, "metric-names": cmd_metric_names,
     "k8s-policy": cmd_k8s_policy, "files": cmd_files}[cmd](*args)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
