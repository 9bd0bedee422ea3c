//! `GET /openapi.json`: the OpenAPI 3.1 document of this service's public routes (the
//! gateway merges it into its own). Hand-written: a handful of routes do not justify a
//! derive framework, and a test checks it lists every route.

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

fn no_content() -> Value {
    json!({ "description": "Done (idempotent)" })
}

fn id_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })
}

fn page_params() -> Vec<Value> {
    vec![
        json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100, "default": 50 } }),
        json!({ "name": "cursor", "in": "query", "description": "next_cursor of the previous page", "schema": { "type": "string" } }),
    ]
}

fn op(summary: &str, params: Vec<Value>, responses: Value) -> Value {
    let mut responses = responses;
    if let Some(map) = responses.as_object_mut() {
        map.insert("401".into(), problem("Missing, invalid or expired token"));
    }
    json!({ "tags": ["users"], "summary": summary, "security": [{ "bearer": [] }], "parameters": params, "responses": responses })
}

fn list(summary: &str, mut params: Vec<Value>, with_404: bool) -> Value {
    params.extend(page_params());
    let mut responses = json!({
        "200": ok("A page", "ProfilePage"),
        "400": problem("invalid_id, invalid_cursor, validation_failed (limit)"),
    });
    if with_404 {
        responses["404"] = problem("user_not_found: unknown, or the user blocks the caller");
    }
    op(summary, params, responses)
}

pub fn document() -> Value {
    let graph_put = |summary: &str, blocked: bool| {
        let mut r = json!({
            "204": no_content(),
            "400": problem("invalid_id, or the caller's own id"),
            "404": problem(kit::error::code::USER_NOT_FOUND),
        });
        if blocked {
            r["403"] = problem("blocked: one side blocks the other");
        }
        op(summary, vec![id_param("id")], r)
    };
    json!({
        "openapi": "3.1.0",
        "info": { "title": "IntelliColab users", "version": "1" },
        "paths": {
            "/users/me": {
                "get": op("The caller's profile", vec![], json!({ "200": ok("Profile", "Profile") })),
                "patch": {
                    "tags": ["users"], "summary": "Edit the caller's profile", "security": [{ "bearer": [] }],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ProfilePatch" } } } },
                    "responses": {
                        "200": ok("Profile after the change", "Profile"),
                        "400": problem("validation_failed with errors[] naming display_name, bio or avatar_url"),
                        "401": problem("Missing, invalid or expired token"),
                    }
                }
            },
            "/users/{id}": {
                "get": op("A profile and its relationship to the caller", vec![id_param("id")], json!({
                    "200": ok("Profile with relationship", "ProfileWithRelationship"),
                    "400": problem(kit::error::code::INVALID_ID),
                    "404": problem("user_not_found: unknown, or the user blocks the caller"),
                }))
            },
            "/users/search": {
                "get": {
                    "tags": ["users"],
                    "summary": "Search people by username and display name",
                    "description": "Prefix, substring and typo-tolerant (1 edit from 4 characters, 2 from 8), case- and accent-insensitive. Ranked exact > prefix > substring > fuzzy, then by followers. Users who block the caller are excluded. Queries of 1–2 characters match by prefix (2 CJK characters also as substring).",
                    "security": [{ "bearer": [] }],
                    "parameters": [
                        { "name": "q", "in": "query", "required": true, "schema": { "type": "string", "minLength": 1, "maxLength": 64 } },
                        page_params()[0], page_params()[1]
                    ],
                    "responses": {
                        "200": ok("Best matches first", "ProfilePage"),
                        "400": problem("validation_failed (q or limit), invalid_cursor"),
                        "401": problem("Missing, invalid or expired token"),
                    }
                }
            },
            "/users/suggested": {
                "get": {
                    "tags": ["users"],
                    "summary": "People followed by the people you follow",
                    "description": "Not yet followed, not blocked either way, not yourself; ranked by how many of your follows follow them (mutual_count), then by id.",
                    "security": [{ "bearer": [] }],
                    "parameters": page_params(),
                    "responses": {
                        "200": ok("Suggestions", "SuggestionPage"),
                        "400": problem("invalid_cursor, validation_failed (limit)"),
                        "401": problem("Missing, invalid or expired token"),
                    }
                }
            },
            "/users/me/following/{id}": {
                "put": graph_put("Follow a user", true),
                "delete": graph_put("Unfollow a user", false),
            },
            "/users/me/blocks/{id}": {
                "put": graph_put("Block a user (ends follows both ways)", false),
                "delete": graph_put("Unblock a user", false),
            },
            "/users/me/blocks": { "get": list("Users the caller blocks", vec![], false) },
            "/users/me/friends": { "get": list("Mutual follows of the caller", vec![], false) },
            "/users/me/followers": { "get": list("The caller's followers, newest first", vec![], false) },
            "/users/me/following": { "get": list("Whom the caller follows, newest first", vec![], false) },
            "/users/{id}/followers": { "get": list("A user's followers, newest first", vec![id_param("id")], true) },
            "/users/{id}/following": { "get": list("Whom a user follows, newest first", vec![id_param("id")], true) },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Profile": {
                    "type": "object",
                    "required": ["id", "username", "display_name", "bio", "avatar_url", "created_at", "followers_count", "following_count"],
                    "properties": {
                        "id": { "type": "string", "format": "uuid" },
                        "username": { "type": "string" },
                        "display_name": { "type": "string" },
                        "bio": { "type": "string", "description": "empty when unset" },
                        "avatar_url": { "type": "string", "description": "https URL, or empty when unset" },
                        "created_at": { "type": "string", "format": "date-time" },
                        "followers_count": { "type": "integer" },
                        "following_count": { "type": "integer" },
                    }
                },
                "ProfilePatch": {
                    "type": "object",
                    "properties": {
                        "display_name": { "type": ["string", "null"], "description": "trimmed; 1–64 characters, no control characters" },
                        "bio": { "type": ["string", "null"], "maxLength": 500 },
                        "avatar_url": { "type": ["string", "null"], "description": "https URL or empty" },
                    }
                },
                "Relationship": {
                    "type": "object",
                    "required": ["following", "followed_by", "friends", "blocking"],
                    "properties": {
                        "following": { "type": "boolean" },
                        "followed_by": { "type": "boolean" },
                        "friends": { "type": "boolean" },
                        "blocking": { "type": "boolean" },
                    }
                },
                "ProfileWithRelationship": {
                    "allOf": [
                        { "$ref": "#/components/schemas/Profile" },
                        { "type": "object", "required": ["relationship"], "properties": { "relationship": { "$ref": "#/components/schemas/Relationship" } } }
                    ]
                },
                "ProfilePage": {
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {
                        "items": { "type": "array", "items": { "$ref": "#/components/schemas/Profile" } },
                        "next_cursor": { "type": ["string", "null"] },
                    }
                },
                "Suggestion": {
                    "allOf": [
                        { "$ref": "#/components/schemas/Profile" },
                        { "type": "object", "required": ["mutual_count"], "properties": { "mutual_count": { "type": "integer", "description": "how many of the caller's follows follow this user" } } }
                    ]
                },
                "SuggestionPage": {
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "properties": {
                        "items": { "type": "array", "items": { "$ref": "#/components/schemas/Suggestion" } },
                        "next_cursor": { "type": ["string", "null"] },
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
