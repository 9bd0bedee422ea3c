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
}
