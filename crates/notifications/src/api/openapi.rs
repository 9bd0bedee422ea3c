//! `GET /openapi.json`: the OpenAPI 3.1 document of this service's public routes (the
//! gateway merges it into its own). Hand-written like the other services'; a test checks
//! it lists every route.

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

fn ok(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn op(summary: &str, params: Vec<Value>, mut responses: Value) -> Value {
    if let Some(map) = responses.as_object_mut() {
        map.insert("401".into(), problem("Missing, invalid or expired token"));
    }
    json!({ "tags": ["notifications"], "summary": summary, "security": [{ "bearer": [] }], "parameters": params, "responses": responses })
}

fn with_body(mut o: Value, schema: &str) -> Value {
    o["requestBody"] = body(schema);
    o
}

fn room_param() -> Value {
    json!({ "name": "room_id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })
}

pub fn document() -> Value {
    let list_params = vec![
        json!({ "name": "unread", "in": "query", "description": "true: unread only", "schema": { "type": "boolean" } }),
        json!({ "name": "cursor", "in": "query", "description": "next_cursor of the previous page", "schema": { "type": "string" } }),
        json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100, "default": 50 } }),
    ];
    json!({
        "openapi": "3.1.0",
        "info": { "title": "IntelliColab notifications", "version": "1" },
        "paths": {
            "/notifications": {
                "get": op("The caller's notifications, newest first", list_params, json!({
                    "200": ok("A page", "NotificationPage"),
                    "400": problem("invalid_cursor, validation_failed (limit), invalid_query"),
                })),
            },
            "/notifications/unread-count": {
                "get": op("How many notifications are unread", vec![], json!({ "200": ok("The count", "UnreadCount") })),
            },
            "/notifications/read": {
                "post": with_body(op("Mark notifications read", vec![], json!({
                    "204": { "description": "Done (idempotent; ids of others are ignored)" },
                    "400": problem("validation_failed (ids, all)"),
                })), "ReadRequest"),
            },
            "/notifications/preferences": {
                "get": op("The caller's preferences", vec![], json!({ "200": ok("Preferences", "Preferences") })),
                "put": with_body(op("Change preferences (absent fields stay)", vec![], json!({
                    "200": ok("Preferences after the change", "Preferences"),
                    "400": problem("validation_failed (email, timezone)"),
                })), "PreferencesPut"),
            },
            "/notifications/rooms/{room_id}": {
                "get": op("The caller's level for a room", vec![room_param()], json!({
                    "200": ok("The setting", "RoomSetting"),
                    "400": problem("invalid_id"),
                    "404": problem("room_not_found: no such room or not a member"),
                    "503": problem("dependency_unavailable: chat cannot answer"),
                })),
                "put": with_body(op("Set the caller's level or mute for a room", vec![room_param()], json!({
                    "200": ok("The setting after the change", "RoomSetting"),
                    "400": problem("invalid_id, validation_failed (level, muted_until)"),
                    "404": problem("room_not_found: no such room or not a member"),
                    "503": problem("dependency_unavailable: chat cannot answer"),
                })), "RoomSettingPut"),
            },
            "/notifications/push/vapid-public-key": {
                "get": op("The VAPID public key for PushManager.subscribe", vec![], json!({ "200": ok("The key", "VapidKey") })),
            },
            "/notifications/push/subscriptions": {
                "post": with_body(op("Register a Push API subscription", vec![], json!({
                    "201": ok("Stored (the same endpoint again replaces it)", "SubscriptionId"),
                    "400": problem("validation_failed (endpoint: https; keys: p256dh a P-256 point, auth 16 bytes)"),
                })), "PushSubscription"),
            },
            "/notifications/push/subscriptions/{id}": {
                "delete": op("Remove a push subscription", vec![json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })], json!({
                    "204": { "description": "Removed" },
                    "400": problem("invalid_id"),
                    "404": problem("subscription_not_found"),
                })),
            },
            "/notifications/unsubscribe": {
                "post": {
                    "tags": ["notifications"],
                    "summary": "One-click email opt-out (RFC 8058): email preference off; no login",
                    "security": [],
                    "parameters": [json!({ "name": "token", "in": "query", "required": true, "description": "from the mail's List-Unsubscribe URL", "schema": { "type": "string" } })],
                    "responses": {
                        "204": { "description": "Email notifications are off (again is harmless)" },
                        "400": problem("invalid_token"),
                    },
                },
            },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Notification": {
                    "type": "object",
                    "required": ["id", "kind", "room_id", "message_id", "seq", "actor_id", "preview", "created_at", "read_at"],
                    "properties": {
                        "id": { "type": "string", "format": "uuid" },
                        "kind": { "type": "string", "enum": ["mention", "dm", "reply", "message"] },
                        "room_id": { "type": "string", "format": "uuid" },
                        "message_id": { "type": "string", "format": "uuid" },
                        "seq": { "type": "integer" },
                        "actor_id": { "type": "string", "format": "uuid" },
                        "preview": { "type": "string", "maxLength": 141, "description": "empty when the recipient turned previews off" },
                        "created_at": { "type": "string", "format": "date-time" },
                        "read_at": { "type": ["string", "null"], "format": "date-time" },
                    }
                },
                "NotificationPage": {
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {
                        "items": { "type": "array", "items": { "$ref": "#/components/schemas/Notification" } },
                        "next_cursor": { "type": ["string", "null"] },
                    }
                },
                "UnreadCount": { "type": "object", "required": ["count"], "properties": { "count": { "type": "integer" } } },
                "ReadRequest": {
                    "type": "object",
                    "description": "either ids or all: true",
                    "properties": {
                        "ids": { "type": "array", "maxItems": 500, "items": { "type": "string", "format": "uuid" } },
                        "all": { "type": "boolean" },
                    }
                },
                "Preferences": {
                    "type": "object",
                    "required": ["email", "web_push", "previews", "timezone"],
                    "properties": {
                        "email": { "type": "string", "enum": ["off", "instant", "daily"] },
                        "web_push": { "type": "boolean" },
                        "previews": { "type": "boolean" },
                        "timezone": { "type": "string", "description": "IANA name, e.g. Europe/Berlin" },
                    }
                },
                "PreferencesPut": {
                    "type": "object",
                    "properties": {
                        "email": { "type": "string", "enum": ["off", "instant", "daily"] },
                        "web_push": { "type": "boolean" },
                        "previews": { "type": "boolean" },
                        "timezone": { "type": "string" },
                    }
                },
                "RoomSetting": {
                    "type": "object",
                    "required": ["room_id", "level", "muted_until"],
                    "properties": {
                        "room_id": { "type": "string", "format": "uuid" },
                        "level": { "type": "string", "enum": ["all", "mentions", "none"] },
                        "muted_until": { "type": ["string", "null"], "format": "date-time" },
                    }
                },
                "RoomSettingPut": {
                    "type": "object",
                    "properties": {
                        "level": { "type": "string", "enum": ["all", "mentions", "none"] },
                        "muted_until": { "type": ["string", "null"], "format": "date-time" },
                    }
                },
                "VapidKey": { "type": "object", "required": ["key"], "properties": { "key": { "type": "string", "description": "base64url uncompressed P-256 public key (65 bytes)" } } },
                "SubscriptionId": { "type": "object", "required": ["id"], "properties": { "id": { "type": "string", "format": "uuid" } } },
                "PushSubscription": {
                    "type": "object",
                    "required": ["endpoint", "keys"],
                    "properties": {
                        "endpoint": { "type": "string", "format": "uri" },
                        "keys": { "type": "object", "required": ["p256dh", "auth"], "properties": { "p256dh": { "type": "string" }, "auth": { "type": "string" } } },
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
