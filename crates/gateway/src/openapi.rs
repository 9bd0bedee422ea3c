//! `GET /openapi.json`: one OpenAPI 3.1 document merged from each service's own
//! `GET /openapi.json`. Fetched in the background from the clusters' instances; a
//! service that is down is retried every few seconds while the others are served.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::body::ProxyBody;
use crate::client::HttpClient;
use crate::upstream::Cluster;

pub struct MergedSpec {
    document: RwLock<Bytes>,
    server_url: String,
}

impl MergedSpec {
    pub fn new(public_url: Option<&str>) -> Self {
        let server_url = public_url
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        let spec = Self {
            document: RwLock::new(Bytes::new()),
            server_url,
        };
        spec.set(&BTreeMap::new());
        spec
    }

    pub fn get(&self) -> Bytes {
        self.document.read().map(|d| d.clone()).unwrap_or_default()
    }

    fn set(&self, parts: &BTreeMap<String, Value>) {
        let doc = merge(parts, &self.server_url);
        let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        if let Ok(mut d) = self.document.write() {
            *d = bytes;
        }
    }
}

/// Merges the services' documents (by cluster name): `paths`, `components` (a
/// component name two services define differently is renamed `<service>_<name>` in the
/// second, with its references), `tags`; `servers` point at the gateway.
pub fn merge(parts: &BTreeMap<String, Value>, server_url: &str) -> Value {
    let mut paths = Map::new();
    let mut components: Map<String, Value> = Map::new();
    let mut tags: Vec<Value> = Vec::new();
    for (service, doc) in parts {
        let mut doc = doc.clone();
        // Rename conflicting components first, so the service's refs follow.
        let mut renames: Vec<(String, String)> = Vec::new();
        if let Some(Value::Object(comps)) = doc.get("components") {
            for (kind, items) in comps {
                let Value::Object(items) = items else {
                    continue;
                };
                for (name, def) in items {
                    if let Some(existing) = components.get(kind).and_then(|k| k.get(name))
                        && existing != def
                    {
                        renames.push((
                            format!("#/components/{kind}/{name}"),
                            format!("#/components/{kind}/{service}_{name}"),
                        ));
                    }
                }
            }
        }
        if !renames.is_empty() {
            rewrite_refs(&mut doc, &renames);
        }
        if let Some(Value::Object(comps)) = doc.get("components") {
            for (kind, items) in comps {
                let Value::Object(items) = items else {
                    continue;
                };
                let target = components
                    .entry(kind.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(target) = target else {
                    continue;
                };
                for (name, def) in items {
                    let renamed = format!("#/components/{kind}/{name}");
                    let name = renames
                        .iter()
                        .find(|(from, _)| *from == renamed)
                        .map(|_| format!("{service}_{name}"))
                        .unwrap_or_else(|| name.clone());
                    target.entry(name).or_insert_with(|| def.clone());
                }
            }
        }
        if let Some(Value::Object(p)) = doc.get("paths") {
            for (path, item) in p {
                paths.entry(path.clone()).or_insert_with(|| item.clone());
            }
        }
        if let Some(Value::Array(t)) = doc.get("tags") {
            for tag in t {
                if !tags.iter().any(|x| x.get("name") == tag.get("name")) {
                    tags.push(tag.clone());
                }
            }
        }
    }
    complete_statuses(&mut paths);
    let target = components
        .entry("responses".to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(target) = target {
        for (name, def) in edge_responses() {
            target.entry(name).or_insert(def);
        }
    }
    let target = components
        .entry("schemas".to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(target) = target {
        target
            .entry(EDGE_PROBLEM.to_owned())
            .or_insert_with(edge_problem_schema);
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "IntelliColab API",
            "version": "1",
            "description": "Everything is reached through this gateway. Errors are RFC 9457 application/problem+json with a stable `code`.",
        },
        "servers": [{ "url": server_url }],
        "paths": paths,
        "components": components,
    });
    if !tags.is_empty() {
        doc["tags"] = Value::Array(tags);
    }
    doc
}

/// The schema of the problems described by [`edge_responses`]: what every `ApiError`
/// serialises to, whichever crate answers (a service's own `Problem` may differ, e.g.
/// auth's requires `detail`, so the gateway keeps its own name).
const EDGE_PROBLEM: &str = "GatewayProblem";

fn edge_problem_schema() -> Value {
    json!({
        "type": "object",
        "required": ["type", "title", "status", "code"],
        "properties": {
            "type": { "type": "string" },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string" },
            "code": { "type": "string" },
            "errors": { "type": "array", "items": { "type": "object", "properties": {
                "field": { "type": "string" }, "message": { "type": "string" } } } },
        }
    })
}

/// Shared responses for the statuses any routed operation can get, whoever answers:
/// the gateway's edge checks (`admit.rs`: 400 `invalid_path`, 401, 413, 415, 429) or the
/// service behind it (400 parse errors, 413/415 from `kit::http::Json`, 503 when its
/// database or a service it asks is down).
fn edge_responses() -> Vec<(String, Value)> {
    let problem = |description: &str| {
        json!({ "description": description, "content": { "application/problem+json": {
            "schema": { "$ref": format!("#/components/schemas/{EDGE_PROBLEM}") } } } })
    };
    let header = |description: &str| json!({ "description": description, "schema": { "type": "integer", "minimum": 0 } });
    let mut rate_limited = problem(
        "rate_limited: over the gateway's limit for this route and caller (user, or client IP \
         without a token). Policy `strict` (10 a minute, bursts of 5) on /auth/register, \
         /auth/login, /auth/password-reset/*, /auth/email*; `default` (50 a second, bursts \
         of 100) everywhere else. Services add their own limits (login throttling, message \
         sends) with the same answer.",
    );
    rate_limited["headers"] = json!({
        "Retry-After": header("seconds to wait"),
        "RateLimit-Limit": header("the policy's burst"),
        "RateLimit-Remaining": header("requests left now"),
        "RateLimit-Reset": header("seconds until the limit is full again"),
    });
    let mut unavailable = problem(
        "database_unavailable or dependency_unavailable (the service's database, or a service \
         it asks, is down), or no instance of the upstream is available: retry after \
         Retry-After (see the client retry rule in docs/api.md)",
    );
    unavailable["headers"] = json!({ "Retry-After": header("seconds to wait") });
    vec![
        (
            "BadRequest".to_owned(),
            problem(
                "Malformed or invalid input: validation_failed (with errors[]), malformed_json, \
                 invalid_id, invalid_query, invalid_path (dot segments or encoded separators)",
            ),
        ),
        (
            "Unauthorized".to_owned(),
            problem("unauthorized, invalid_token, token_expired or session_revoked"),
        ),
        (
            "PayloadTooLarge".to_owned(),
            problem("payload_too_large: request bodies are limited to 1 MiB by default"),
        ),
        (
            "UnsupportedMediaType".to_owned(),
            problem("unsupported_media_type: request bodies must be application/json"),
        ),
        ("RateLimited".to_owned(), rate_limited),
        ("Unavailable".to_owned(), unavailable),
    ]
}

/// Adds to every routed operation the statuses it can get without describing them
/// itself: 429 and 503 everywhere (every route has a rate-limit policy, `default`
/// unless named, and every service has a database), 413 and 415 with a request body,
/// 401 when it needs a token, 400 when it parses input (parameters or a body). An
/// operation's own description of a status wins.
fn complete_statuses(paths: &mut Map<String, Value>) {
    for item in paths.values_mut() {
        let Value::Object(item) = item else {
            continue;
        };
        // Parameters may be declared for the whole path (`/auth/sessions/{id}`).
        let path_params = item
            .get("parameters")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty());
        for (method, op) in item.iter_mut() {
            if !matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
            ) {
                continue;
            }
            let has_body = op.get("requestBody").is_some();
            let has_params = path_params
                || op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .is_some_and(|p| !p.is_empty());
            let needs_token = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| {
                    s.iter()
                        .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
                });
            let Some(Value::Object(responses)) = op.get_mut("responses") else {
                continue;
            };
            let mut add = |status: &str, name: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| json!({ "$ref": format!("#/components/responses/{name}") }));
            };
            if has_body || has_params {
                add("400", "BadRequest");
            }
            if needs_token {
                add("401", "Unauthorized");
            }
            if has_body {
                add("413", "PayloadTooLarge");
                add("415", "UnsupportedMediaType");
            }
            add("429", "RateLimited");
            add("503", "Unavailable");
        }
    }
}

fn rewrite_refs(v: &mut Value, renames: &[(String, String)]) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "$ref" {
                    if let Value::String(s) = child
                        && let Some((_, to)) = renames.iter().find(|(from, _)| from == s)
                    {
                        *s = to.clone();
                    }
                } else {
                    rewrite_refs(child, renames);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| rewrite_refs(c, renames)),
        _ => {}
    }
}

async fn fetch(client: &HttpClient, cluster: &Cluster) -> Option<Value> {
    for instance in &cluster.instances {
        let uri = instance.uri("/openapi.json", None)?;
        let Ok(req) = http::Request::get(uri).body(ProxyBody::empty()) else {
            continue;
        };
        let attempt = async {
            let res = client.request(req).await.ok()?;
            if !res.status().is_success() {
                return None;
            }
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .ok()?;
            serde_json::from_slice::<Value>(&body.to_bytes()).ok()
        };
        if let Ok(Some(doc)) = tokio::time::timeout(Duration::from_secs(3), attempt).await
            && doc.get("paths").is_some_and(Value::is_object)
        {
            return Some(doc);
        }
    }
    None
}

/// Keeps the merged document current until `shutdown`: retries missing services every
/// few seconds, refreshes complete documents every minute.
pub async fn refresh_loop(
    spec: Arc<MergedSpec>,
    clusters: Vec<Arc<Cluster>>,
    client: HttpClient,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut parts: BTreeMap<String, Value> = BTreeMap::new();
    loop {
        let mut complete = true;
        let mut changed = false;
        for cluster in &clusters {
            match fetch(&client, cluster).await {
                Some(doc) => {
                    if parts.get(&cluster.name) != Some(&doc) {
                        parts.insert(cluster.name.clone(), doc);
                        changed = true;
                    }
                }
                None => complete = false,
            }
        }
        if changed {
            spec.set(&parts);
        }
        let wait = if complete {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(3)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_paths_and_renames_conflicting_components() {
        let a = json!({"openapi": "3.1.0", "paths": {"/auth/login": {"post": {"responses": {"200": {"$ref": "#/components/responses/Ok"}}}}},
            "components": {"schemas": {"Problem": {"type": "object"}}, "responses": {"Ok": {"description": "a"}}}});
        let b = json!({"openapi": "3.1.0", "paths": {"/users/me": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}}}}},
            "components": {"schemas": {"Problem": {"type": "string"}}}});
        let parts = BTreeMap::from([("auth".to_owned(), a), ("users".to_owned(), b)]);
        let doc = merge(&parts, "/");
        assert!(doc["paths"]["/auth/login"].is_object());
        assert!(doc["paths"]["/users/me"].is_object());
        assert_eq!(doc["components"]["schemas"]["Problem"]["type"], "object");
        assert_eq!(
            doc["components"]["schemas"]["users_Problem"]["type"],
            "string"
        );
        assert_eq!(
            doc["paths"]["/users/me"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/users_Problem"
        );
        assert_eq!(doc["servers"][0]["url"], "/");
    }

    #[test]
    fn every_operation_lists_the_statuses_the_edge_and_dependencies_give() {
        let a = json!({"paths": {
            "/auth/login": {"post": {"requestBody": {"content": {}}, "responses": {"200": {"description": "ok"}, "429": {"description": "throttled logins"}}}},
            "/users/{id}": {"get": {"security": [{"bearer": []}], "parameters": [{"name": "id", "in": "path"}], "responses": {"200": {"description": "ok"}}}},
            "/users/me": {"get": {"security": [{"bearer": []}], "parameters": [], "responses": {"200": {"description": "ok"}}}},
        }});
        let doc = merge(&BTreeMap::from([("auth".to_owned(), a)]), "/");
        let statuses = |path: &str, method: &str| -> Vec<String> {
            let mut s: Vec<String> = doc["paths"][path][method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            s.sort();
            s
        };
        assert_eq!(
            statuses("/auth/login", "post"),
            ["200", "400", "413", "415", "429", "503"]
        );
        // The service's own description wins.
        assert_eq!(
            doc["paths"]["/auth/login"]["post"]["responses"]["429"]["description"],
            "throttled logins"
        );
        assert_eq!(
            statuses("/users/{id}", "get"),
            ["200", "400", "401", "429", "503"]
        );
        assert_eq!(statuses("/users/me", "get"), ["200", "401", "429", "503"]);
        for name in [
            "BadRequest",
            "Unauthorized",
            "PayloadTooLarge",
            "UnsupportedMediaType",
            "RateLimited",
            "Unavailable",
        ] {
            assert!(doc["components"]["responses"][name].is_object(), "{name}");
        }
        assert!(doc["components"]["schemas"][EDGE_PROBLEM].is_object());
    }
}
