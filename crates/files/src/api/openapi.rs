//! `GET /openapi.json`: the OpenAPI 3.1 document of this service's public routes (the
//! gateway merges it into its own). Hand-written like the other services'.

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use crate::state::ApiContext;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/openapi.json", get(|| async { axum::Json(document()) }))
}

fn problem(description: &str) -> Value {
    json!({ "description": description, "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } })
}

fn op(summary: &str, params: Vec<Value>, mut responses: Value) -> Value {
    if let Some(map) = responses.as_object_mut() {
        map.insert("401".into(), problem("Missing, invalid or expired token"));
    }
    json!({ "tags": ["files"], "summary": summary, "security": [{ "bearer": [] }], "parameters": params, "responses": responses })
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })
}

fn bytes(description: &str) -> Value {
    json!({ "description": description, "content": { "*/*": { "schema": { "type": "string", "format": "binary" } } } })
}

pub fn document() -> Value {
    let mut upload = op(
        "Upload a file (raw body, or multipart/form-data with one `file` part)",
        vec![
            json!({ "name": "filename", "in": "query", "description": "required for a raw body; a multipart part's own filename is used otherwise", "schema": { "type": "string", "maxLength": 255 } }),
        ],
        json!({
            "201": { "description": "Stored", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/File" } } } },
            "400": problem("validation_failed (filename, file), malformed_body, invalid_image (an image that does not decode within the limits)"),
            "413": problem("payload_too_large (over 25 MiB by default), quota_exceeded"),
            "503": problem("storage_unavailable, database_unavailable"),
        }),
    );
    upload["requestBody"] = json!({
        "required": true,
        "content": {
            "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
            "multipart/form-data": { "schema": { "type": "object", "required": ["file"], "properties": { "file": { "type": "string", "format": "binary" } } } },
        }
    });
    let range = json!({ "name": "Range", "in": "header", "description": "one `bytes=` range", "schema": { "type": "string" } });
    let inm = json!({ "name": "If-None-Match", "in": "header", "schema": { "type": "string" } });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "IntelliColab files", "version": "1" },
        "paths": {
            "/files": { "post": upload },
            "/files/{id}": {
                "get": op("Download a file (uploader, or a member of a room where it is attached)", vec![id_param(), range, inm.clone()], json!({
                    "200": bytes("The bytes; `Content-Disposition: attachment` except for raster images, `ETag`, `X-Content-Type-Options: nosniff`, `Cache-Control: private`"),
                    "206": bytes("The requested range, with `Content-Range`"),
                    "304": { "description": "Not modified (If-None-Match)" },
                    "400": problem("invalid_id"),
                    "404": problem("file_not_found: no such file, or not readable by the caller"),
                    "416": problem("The range starts past the end (`Content-Range: bytes */size`)"),
                    "503": problem("dependency_unavailable (chat cannot confirm membership), storage_unavailable"),
                })),
                "delete": op("Delete an upload (uploader, while no message carries it)", vec![id_param()], json!({
                    "204": { "description": "Deleted" },
                    "404": problem("file_not_found"),
                    "409": problem("file_attached"),
                })),
            },
            "/files/{id}/thumbnail": {
                "get": op("The image's thumbnail (PNG, ≤ 320 px a side)", vec![id_param(), inm], json!({
                    "200": bytes("image/png"),
                    "304": { "description": "Not modified (If-None-Match)" },
                    "404": problem("file_not_found: no such file, not readable, or not an image"),
                    "503": problem("dependency_unavailable, storage_unavailable"),
                })),
            },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "File": {
                    "type": "object",
                    "required": ["id", "filename", "content_type", "size", "sha256", "width", "height", "created_at", "url", "thumbnail_url"],
                    "properties": {
                        "id": { "type": "string", "format": "uuid" },
                        "filename": { "type": "string" },
                        "content_type": { "type": "string", "description": "sniffed from the bytes" },
                        "size": { "type": "integer" },
                        "sha256": { "type": "string", "description": "lower-case hex of the stored bytes" },
                        "width": { "type": ["integer", "null"] },
                        "height": { "type": ["integer", "null"] },
                        "created_at": { "type": "string", "format": "date-time" },
                        "url": { "type": "string" },
                        "thumbnail_url": { "type": ["string", "null"] },
                    }
                },
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "code"],
                    "properties": {
                        "type": { "type": "string" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" },
                        "code": { "type": "string" },
                        "errors": { "type": "array", "items": { "type": "object", "properties": { "field": { "type": "string" }, "message": { "type": "string" } } } },
                    }
                }
            }
        }
    })
}
