//! The API reference (`docs/api.md`) and the OpenAPI document the gateway serves agree:
//! every route in the reference's tables is an operation of `GET /openapi.json` on a real
//! `serve all`, and every operation there is a row of the reference. And every operation
//! lists the statuses it can get from the edge and its dependencies (429, 503; 413 and 415
//! with a body; 401 with a token; 400 with input), so a client — or schemathesis — never
//! meets an undocumented one. The route set does not depend on the storage backend, so one
//! (SQLite) is enough.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::{Ports, Proc};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// `/users/{id}/followers?limit=` → `/users/{}/followers`: parameter names and query
/// strings are the reference's prose, not part of the route.
fn normalise(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// The `METHOD path` of every table row whose first cell is ``METHOD `path` ``.
fn routes_in_reference(markdown: &str) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for line in markdown.lines() {
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let first = row.split('|').next().unwrap_or_default().trim();
        let Some((method, rest)) = first.split_once(' ') else {
            continue;
        };
        if !METHODS.contains(&method) {
            continue;
        }
        let rest = rest.trim();
        let path = rest
            .strip_prefix('`')
            .and_then(|r| r.split_once('`'))
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("a route row must name one path in backticks: {line}"));
        routes.insert(format!("{method} {}", normalise(path)));
    }
    routes
}

fn routes_in_openapi(doc: &Value) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            if METHODS.contains(&method.as_str()) {
                routes.insert(format!("{method} {}", normalise(path)));
            }
        }
    }
    routes
}

#[test]
fn the_reference_parser_reads_route_rows_only() {
    let md = "| method, path | body |\n|---|---|\n\
              | GET `/users/{id}/followers?limit=&cursor=` | — |\n\
              | POST `/chat/rooms/{id}/members` | `{user_id}` |\n\
              | area | built |\n| 1008 | too many |\n";
    let routes = routes_in_reference(md);
    assert_eq!(
        routes.into_iter().collect::<Vec<_>>(),
        ["GET /users/{}/followers", "POST /chat/rooms/{}/members"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_reference_is_in_the_served_openapi_and_back() {
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    let documented = routes_in_reference(&reference);
    // A guard against a parser that silently reads nothing.
    assert!(
        documented.len() >= 40,
        "only {} routes parsed from docs/api.md",
        documented.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let _system = Proc::start(dir.path(), "all", &["serve", "all"], &ports.env(dir.path()));
    ports.wait_all_ready().await;

    // The gateway merges the services' documents in the background (a missing one is
    // retried every 3 s): wait until every service is in it.
    let http = reqwest::Client::new();
    let url = format!("{}/openapi.json", ports.gateway_url());
    let mut doc = Value::Null;
    for _ in 0..300 {
        let res = http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        doc = res.json().await.unwrap();
        let paths = doc["paths"].as_object().unwrap();
        if ["/auth/", "/users/", "/chat/", "/notifications", "/files"]
            .iter()
            .all(|s| paths.keys().any(|p| p.starts_with(s)))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = routes_in_openapi(&doc);

    let missing: Vec<_> = documented.difference(&served).collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        missing.is_empty() && undocumented.is_empty(),
        "in docs/api.md but not in /openapi.json: {missing:?}; \
         in /openapi.json but not in docs/api.md: {undocumented:?}"
    );

    // Statuses: what the gateway's edge and the services' dependencies can answer.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let path_params = item["parameters"].as_array().is_some_and(|p| !p.is_empty());
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.to_uppercase().as_str()) {
                continue;
            }
            let responses = op["responses"].as_object().unwrap();
            let has = |s: &str| responses.contains_key(s);
            let what = format!("{} {path}", method.to_uppercase());
            assert!(has("429"), "{what}: 429 (every route has a rate limit)");
            assert!(has("503"), "{what}: 503 (database or dependency down)");
            let body = op.get("requestBody").is_some();
            if body {
                assert!(has("413") && has("415"), "{what}: 413 and 415 (a body)");
            }
            let secured = op["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
            });
            if secured {
                assert!(has("401"), "{what}: 401 (needs a token)");
            }
            let params = path_params || op["parameters"].as_array().is_some_and(|p| !p.is_empty());
            if body || params {
                assert!(has("400"), "{what}: 400 (parses input)");
            }
        }
    }
    // Every `$ref` to a shared response resolves.
    let text = doc.to_string();
    assert!(text.contains("\"#/components/responses/RateLimited\""));
    for part in text.split("\"#/components/").skip(1) {
        let target = part.split('"').next().unwrap();
        let (kind, name) = target.split_once('/').unwrap();
        assert!(
            doc["components"][kind][name].is_object(),
            "unresolved $ref #/components/{target}"
        );
    }

    // The gateway's own endpoints answer as docs/api.md says.
    let res = http
        .get(format!("{}/healthz", ports.gateway_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");
    // 200 from the start; "degraded" until the health checks have seen every upstream
    // (they run every 250 ms for instances not seen up yet), then "ready".
    let mut ready = Value::Null;
    for _ in 0..100 {
        let res = http
            .get(format!("{}/readyz", ports.gateway_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        ready = res.json().await.unwrap();
        if ready["status"] == "ready" {
            break;
        }
        assert_eq!(ready["status"], "degraded", "{ready}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["upstreams"]["chat"]["available"].is_u64());
}
