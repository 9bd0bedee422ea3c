//! `GET /openapi.json`: the OpenAPI 3.1 document of the chat service's public routes (the
//! gateway merges it). Hand-written; a test checks that it lists every route.

use axum::Router;
use axum::routing::get;
use kit::error::code;
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

fn room_id() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })
}

fn uuid_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })
}

/// A reaction's emoji, percent-encoded in the path (v1.1).
fn emoji_param() -> Value {
    json!({ "name": "emoji", "in": "path", "required": true, "schema": { "type": "string" }, "description": "one emoji (grapheme cluster) or a shortcode :[a-z0-9_+-]{1,32}:, percent-encoded" })
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({ "name": name, "in": "query", "schema": schema, "description": description })
}

fn page_params() -> Vec<Value> {
    vec![
        query(
            "limit",
            json!({ "type": "integer", "minimum": 1, "maximum": 100, "default": 50 }),
            "page size",
        ),
        query(
            "cursor",
            json!({ "type": "string" }),
            "next_cursor of the previous page",
        ),
    ]
}

/// An authenticated operation; 401 and 400 are added to every one.
fn op(summary: &str, params: Vec<Value>, request: Option<Value>, mut responses: Value) -> Value {
    if let Some(map) = responses.as_object_mut() {
        map.insert(
            "401".into(),
            problem("unauthorized, invalid_token, token_expired or session_revoked"),
        );
        map.entry("400").or_insert_with(|| {
            problem("validation_failed, malformed_json, invalid_id, invalid_query")
        });
    }
    let mut o = json!({ "tags": ["chat"], "summary": summary, "security": [{ "bearer": [] }], "parameters": params, "responses": responses });
    if let Some(r) = request {
        o["requestBody"] = r;
    }
    o
}

fn hidden_room() -> Value {
    problem("room_not_found (also for private rooms the caller is not in)")
}

pub fn document() -> Value {
    let mut history_params = vec![room_id()];
    history_params.extend([
        query(
            "before",
            json!({"type": "integer", "minimum": 0}),
            "only messages with a smaller seq (older); has_more then tells whether older ones exist",
        ),
        query(
            "after",
            json!({"type": "integer", "minimum": 0}),
            "only messages with a greater seq (newer); has_more then tells whether newer ones exist",
        ),
        query(
            "limit",
            json!({ "type": "integer", "minimum": 1, "maximum": 100, "default": 50 }),
            "page size",
        ),
    ]);
    let mut discover_params = vec![query(
        "q",
        json!({"type": "string"}),
        "case-insensitive substring of the room name",
    )];
    discover_params.extend(page_params());
    let mut members_params = vec![room_id()];
    members_params.extend(page_params());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "IntelliColab chat",
            "version": "1",
            "description": "Rooms, messages and the room event log. Real time: GET /chat/ws (WebSocket), see the operation's description for frames and close codes."
        },
        "paths": {
            "/chat/rooms": {
                "post": op("Create a channel (the caller becomes its owner)", vec![], Some(body("CreateRoom")), json!({
                    "201": ok("The room", "Room"),
                    "400": problem("validation_failed (name 1–80 printable characters, topic ≤ 500; no control characters — a topic may have line feeds and tabs — and no bidirectional overrides or isolates)"),
                })),
                "get": op("The caller's rooms with unread_count and last_message", page_params(), None, json!({
                    "200": ok("A page of rooms", "MyRoomPage"),
                })),
            },
            "/chat/rooms/discover": {
                "get": op("Public channels", discover_params, None, json!({ "200": ok("A page of rooms", "RoomPage") })),
            },
            "/chat/rooms/{id}": {
                "get": op("A room", vec![room_id()], None, json!({ "200": ok("The room", "Room"), "404": hidden_room() })),
            },
            "/chat/rooms/{id}/join": {
                "post": op("Join a public channel (idempotent)", vec![room_id()], None, json!({ "200": ok("The room", "Room"), "404": hidden_room() })),
            },
            "/chat/rooms/{id}/leave": {
                "post": op("Leave a room (an owner's role passes to the longest-standing admin, else member)", vec![room_id()], None, json!({
                    "204": { "description": "Left" },
                    "403": problem(code::NOT_MEMBER),
                    "404": hidden_room(),
                })),
            },
            "/chat/rooms/{id}/members": {
                "get": op("Members (members only)", members_params, None, json!({
                    "200": ok("A page of members", "MemberPage"),
                    "403": problem(code::NOT_MEMBER),
                    "404": hidden_room(),
                })),
                "post": op("Add a member (owner/admin only)", vec![room_id()], Some(body("UserRef")), json!({
                    "201": { "description": "Added" },
                    "400": problem("validation_failed, not_a_channel (DMs)"),
                    "403": problem("forbidden (not owner/admin), not_member, blocked (the invitee blocks the inviter)"),
                    "404": problem("room_not_found, user_not_found (no such user)"),
                    "409": problem(code::ALREADY_MEMBER),
                    "503": problem("dependency_unavailable: the user service cannot be asked"),
                })),
            },
            "/chat/rooms/{id}/members/{user_id}": {
                "delete": op("Remove a member (owner/admin only; admins remove members only)", vec![room_id(), uuid_param("user_id")], None, json!({
                    "204": { "description": "Removed" },
                    "400": problem("use_leave (removing yourself)"),
                    "403": problem("forbidden, not_member"),
                    "404": problem("room_not_found, member_not_found"),
                })),
                "patch": op("Change a member's role (owner only)", vec![room_id(), uuid_param("user_id")], Some(body("RoleChange")), json!({
                    "204": { "description": "Changed" },
                    "403": problem("forbidden, not_member"),
                    "404": problem("room_not_found, member_not_found"),
                })),
            },
            "/chat/dms": {
                "post": op("The direct conversation with a user (the same room for the same pair, every time)", vec![], Some(body("UserRef")), json!({
                    "200": ok("The existing room", "Room"),
                    "201": ok("The room, created now", "Room"),
                    "403": problem("blocked: one side blocks the other (nobody is added back)"),
                    "404": problem("user_not_found: no such user"),
                    "503": problem("dependency_unavailable: the user service cannot be asked"),
                })),
            },
            "/chat/rooms/{id}/messages": {
                "post": op("Send a message (acknowledged after it is stored)", vec![room_id()], Some(body("SendMessage")), json!({
                    "201": ok("Stored", "Message"),
                    "200": ok("The message stored earlier with the same client_msg_id", "Message"),
                    "400": problem("validation_failed (body 1–4000 characters after trimming, without control characters but line feeds and tabs; reply_to of another room); invalid_thread (thread_root_id not a top-level message of this room)"),
                    "403": problem("not_member; blocked (a DM whose members block each other, either way)"),
                    "404": hidden_room(),
                    "409": problem("client_msg_id_conflict: the id was used in another room"),
                    "429": problem("rate_limited, with Retry-After"),
                    "503": problem("database_unavailable, with Retry-After: not stored; retry with the same client_msg_id"),
                })),
                "get": op("Message history, ascending seq", history_params, None, json!({
                    "200": ok("Messages", "MessageSlice"),
                    "403": problem(code::NOT_MEMBER),
                    "404": hidden_room(),
                })),
            },
            "/chat/rooms/{id}/messages/{message_id}": {
                "patch": op("Edit a message (sender only)", vec![room_id(), uuid_param("message_id")], Some(body("EditMessage")), json!({
                    "200": ok("The message after the edit", "Message"),
                    "403": problem("not_sender, not_member, blocked (a DM whose members block each other)"),
                    "404": problem("room_not_found, message_not_found"),
                    "409": problem(code::MESSAGE_DELETED),
                })),
                "delete": op("Delete a message as a tombstone (sender, owner or admin; idempotent)", vec![room_id(), uuid_param("message_id")], None, json!({
                    "204": { "description": "Deleted" },
                    "403": problem("forbidden, not_member"),
                    "404": problem("room_not_found, message_not_found"),
                })),
            },
            "/chat/rooms/{id}/threads/{root_id}/messages": {
                "get": op("The replies in a thread (without the root), ascending seq", vec![
                    room_id(),
                    uuid_param("root_id"),
                    query("after", json!({"type": "integer", "minimum": 0, "default": 0}), "replies with a greater seq"),
                    query("limit", json!({ "type": "integer", "minimum": 1, "maximum": 100, "default": 50 }), "page size"),
                ], None, json!({
                    "200": ok("Replies", "MessageSlice"),
                    "403": problem(code::NOT_MEMBER),
                    "404": problem("room_not_found (private room), message_not_found (no such top-level message in the room)"),
                })),
            },
            "/chat/rooms/{id}/read": {
                "post": op("Move the read marker (never backwards; capped at the room's last seq)", vec![room_id()], Some(body("ReadMarker")), json!({
                    "204": { "description": "Marked" },
                    "403": problem(code::NOT_MEMBER),
                    "404": hidden_room(),
                })),
            },
            "/chat/rooms/{id}/events": {
                "get": op("The room's event log, for catch-up", vec![
                    room_id(),
                    query("after", json!({"type": "integer", "minimum": 0, "default": 0}), "events with a greater seq"),
                    query("limit", json!({ "type": "integer", "minimum": 1, "maximum": 100, "default": 50 }), "page size"),
                ], None, json!({
                    "200": ok("Events", "EventSlice"),
                    "403": problem(code::NOT_MEMBER),
                    "404": hidden_room(),
                })),
            },
            "/chat/rooms/{id}/messages/{message_id}/reactions/{emoji}": {
                "put": op("React to a message (v1.1; idempotent: a repeat appends no event)", vec![room_id(), uuid_param("message_id"), emoji_param()], None, json!({
                    "204": { "description": "The caller's reaction is there" },
                    "400": problem("invalid_emoji (one emoji grapheme cluster, or a shortcode :[a-z0-9_+-]{1,32}:), invalid_id"),
                    "403": problem("not_member; blocked (a DM whose members block each other)"),
                    "404": problem("room_not_found, message_not_found"),
                    "409": problem("message_deleted; too_many_reactions (20 distinct emoji per message)"),
                })),
                "delete": op("Remove the caller's reaction (v1.1; idempotent)", vec![room_id(), uuid_param("message_id"), emoji_param()], None, json!({
                    "204": { "description": "The caller's reaction is gone" },
                    "400": problem("invalid_emoji, invalid_id"),
                    "403": problem(code::NOT_MEMBER),
                    "404": problem("room_not_found, message_not_found"),
                })),
            },
            "/chat/rooms/{id}/messages/{message_id}/reactions": {
                "get": op("Who reacted (this project's addition): per emoji by first reaction time, the users in reaction order", vec![room_id(), uuid_param("message_id")], None, json!({
                    "200": ok("Reactions with their users", "ReactorList"),
                    "403": problem(code::NOT_MEMBER),
                    "404": problem("room_not_found, message_not_found"),
                })),
            },
            "/chat/rooms/{id}/pins/{message_id}": {
                "put": op("Pin a message (v1.1; owner/admin, both members in a DM; idempotent)", vec![room_id(), uuid_param("message_id")], None, json!({
                    "204": { "description": "Pinned" },
                    "403": problem("forbidden (not owner/admin), not_member, blocked (a DM whose members block each other)"),
                    "404": problem("room_not_found, message_not_found"),
                    "409": problem("message_deleted; pin_limit (50 pins per room)"),
                })),
                "delete": op("Unpin a message (v1.1; owner/admin, both members in a DM; idempotent)", vec![room_id(), uuid_param("message_id")], None, json!({
                    "204": { "description": "Not pinned" },
                    "403": problem("forbidden, not_member"),
                    "404": problem("room_not_found, message_not_found"),
                })),
            },
            "/chat/rooms/{id}/pins": {
                "get": op("The room's pinned messages, newest pin first (v1.1; members only)", vec![room_id()], None, json!({
                    "200": ok("Pinned messages", "MessageList"),
                    "403": problem(code::NOT_MEMBER),
                    "404": hidden_room(),
                })),
            },
            "/chat/rooms/{id}/read-markers": {
                "get": op("Every member's read marker (v1.1 read receipts; members only)", vec![room_id()], None, json!({
                    "200": ok("Read markers by user id", "ReadMarkerList"),
                    "403": problem(code::NOT_MEMBER),
                    "404": hidden_room(),
                })),
            },
            "/chat/search": {
                "get": op("Search the messages of my rooms (full text, best match first, then newest)", vec![
                    query("q", json!({ "type": "string", "minLength": 1, "maxLength": 200 }), "words (each also matches as a prefix; an exact word ranks higher) and \"quoted phrases\"; all must match; case- and accent-insensitive, any script (CJK ideographs in a row match as a phrase)"),
                    query("room_id", json!({ "type": "string", "format": "uuid" }), "only this room (members only)"),
                    query("limit", json!({ "type": "integer", "minimum": 1, "maximum": 100, "default": 20 }), "page size"),
                    query("cursor", json!({ "type": "string" }), "next_cursor of the previous page"),
                ], None, json!({
                    "200": ok("Matches in the rooms the caller is a member of now; deleted messages never. The newest 200 matches are ranked (at most 200 results per query).", "SearchPage"),
                    "400": problem("validation_failed (q empty or over 200 characters, limit), invalid_cursor, invalid_query"),
                    "403": problem(code::NOT_MEMBER),
                    "404": hidden_room(),
                })),
            },
            "/chat/presence": {
                "get": op("Presence of up to 200 users (online, idle or offline; users who block the caller show offline, never seen)", vec![
                    query("user_ids", json!({"type": "string"}), "comma-separated user ids (≤ 200; duplicates answered once)"),
                ], None, json!({
                    "200": ok("One item per distinct id, in the order asked", "PresenceList"),
                    "400": problem("validation_failed (more than 200 ids), invalid_id (an id does not parse)"),
                })),
            },
            "/chat/ws": {
                "get": {
                    "tags": ["chat"],
                    "summary": "Real-time connection (WebSocket)",
                    "description": concat!(
                        "Authenticate with `Authorization: Bearer` or the `access_token` query parameter. ",
                        "JSON text frames. Client → server: `send` {room_id, body, client_msg_id, reply_to?, thread_root_id?} → `ack` {client_msg_id, message} after commit, ",
                        "or `error` {client_msg_id, code, message} (`rate_limited` adds retry_after_ms); `resume` {rooms: {room_id: last_seq}} → ",
                        "every event after those seqs in order, then live; `typing` {room_id} → others get `typing` {room_id, user_id}; `ping` → `pong`. ",
                        "v1.1: `read` {room_id, user_id, seq} to the room's other members when a member's read marker moves (not stored, dropped when the client is behind). ",
                        "Presence: `presence.subscribe` {user_ids: [≤ 200]} replaces the connection's set and answers one `presence` {user_id, status, last_seen_at} per newly subscribed user at once, then one per change ",
                        "(`error` validation_failed over 200 ids); `idle` / `active` mark this connection (a user is online while any connection is active, idle when all are idle, offline 30 s after the last closed). ",
                        "Server → client: `ready` {rooms: {room_id: last_seq}} once subscribed, `event` {room_id, seq, event}. ",
                        "Live events wait after `ready` for the client's first frame (at most 1 s): send `resume` first to get each resumed room's missed events before any live one. ",
                        "A malformed frame gets `error` (code malformed_frame) and the connection stays open. Frames are limited to 64 KiB. ",
                        "Close codes: 4001 session revoked or token expired (reconnect with a new token), 4008 slow consumer (reconnect and resume), ",
                        "4009 idle timeout, 1001 server shutting down, 1009 frame too large, ",
                        "1008 too_many_connections (over the per-user limit, 16 by default), 1013 database unavailable (reconnect later and resume)."
                    ),
                    "security": [{ "bearer": [] }],
                    "parameters": [query("access_token", json!({"type": "string"}), "the access token, for clients that cannot set headers")],
                    "responses": {
                        "101": { "description": "Switching protocols" },
                        "400": problem("websocket_required: not a WebSocket upgrade request"),
                        "401": problem("unauthorized, invalid_token, token_expired or session_revoked"),
                    }
                }
            }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "code"],
                    "properties": {
                        "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
                        "detail": { "type": "string" }, "code": { "type": "string" },
                        "errors": { "type": "array", "items": { "type": "object", "properties": { "field": { "type": "string" }, "message": { "type": "string" } } } }
                    }
                },
                "PresenceList": {
                    "type": "object",
                    "properties": { "items": { "type": "array", "items": { "type": "object",
                        "required": ["user_id", "status", "last_seen_at"],
                        "properties": {
                            "user_id": { "type": "string", "format": "uuid" },
                            "status": { "type": "string", "enum": ["online", "idle", "offline"] },
                            "last_seen_at": { "type": ["string", "null"], "format": "date-time", "description": "when the user was last online: now for online users, when it went idle, when it went offline; null if never seen" }
                        } } } }
                },
                "Room": {
                    "type": "object",
                    "required": ["id", "kind", "name", "topic", "visibility", "owner_id", "created_at", "member_count", "last_seq"],
                    "properties": {
                        "id": { "type": "string", "format": "uuid" },
                        "kind": { "enum": ["channel", "dm"] },
                        "name": { "type": "string" },
                        "topic": { "type": "string" },
                        "visibility": { "enum": ["public", "private"] },
                        "owner_id": { "type": "string", "format": "uuid" },
                        "created_at": { "type": "string", "format": "date-time" },
                        "member_count": { "type": "integer" },
                        "last_seq": { "type": "integer" }
                    }
                },
                "MyRoom": {
                    "allOf": [
                        { "$ref": "#/components/schemas/Room" },
                        { "type": "object", "required": ["role", "read_seq", "unread_count", "last_message"], "properties": {
                            "role": { "enum": ["owner", "admin", "member"] },
                            "read_seq": { "type": "integer" },
                            "unread_count": { "type": "integer", "description": "messages from others, not deleted, with a seq above read_seq" },
                            "last_message": { "oneOf": [{ "$ref": "#/components/schemas/Message" }, { "type": "null" }] }
                        } }
                    ]
                },
                "RoomPage": { "type": "object", "required": ["items", "next_cursor"], "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/Room" } }, "next_cursor": { "type": ["string", "null"] } } },
                "MyRoomPage": { "type": "object", "required": ["items", "next_cursor"], "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/MyRoom" } }, "next_cursor": { "type": ["string", "null"] } } },
                "Member": {
                    "type": "object", "required": ["user_id", "role", "joined_at"],
                    "properties": { "user_id": { "type": "string", "format": "uuid" }, "role": { "enum": ["owner", "admin", "member"] }, "joined_at": { "type": "string", "format": "date-time" } }
                },
                "MemberPage": { "type": "object", "required": ["items", "next_cursor"], "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/Member" } }, "next_cursor": { "type": ["string", "null"] } } },
                "Message": {
                    "type": "object",
                    "required": ["id", "room_id", "seq", "sender_id", "body", "client_msg_id", "reply_to", "created_at", "edited_at", "deleted",
                                 "mentions", "thread_root_id", "reply_count", "last_reply_at"],
                    "properties": {
                        "id": { "type": "string", "format": "uuid" },
                        "room_id": { "type": "string", "format": "uuid" },
                        "seq": { "type": "integer" },
                        "sender_id": { "type": ["string", "null"], "format": "uuid", "description": "null for a deleted account's messages" },
                        "body": { "type": "string" },
                        "client_msg_id": { "type": ["string", "null"] },
                        "reply_to": { "type": ["string", "null"], "format": "uuid" },
                        "created_at": { "type": "string", "format": "date-time" },
                        "edited_at": { "type": ["string", "null"], "format": "date-time" },
                        "deleted": { "type": "boolean" },
                        "mentions": { "type": "array", "items": { "type": "string", "format": "uuid" }, "description": "members mentioned with @username (or all of them with @room from the owner/an admin), resolved at send and at each edit; never the sender" },
                        "thread_root_id": { "type": ["string", "null"], "format": "uuid", "description": "the top-level message whose thread this reply is in" },
                        "reply_count": { "type": "integer", "description": "thread roots: replies so far (tombstones included)" },
                        "last_reply_at": { "type": ["string", "null"], "format": "date-time" },
                        "reactions": { "type": "array", "items": { "$ref": "#/components/schemas/ReactionCount" }, "description": "v1.1: by first reaction time; empty on a deleted message" },
                        "pinned": { "type": "boolean", "description": "v1.1" }
                    }
                },
                "ReactionCount": {
                    "type": "object", "required": ["emoji", "count"],
                    "properties": { "emoji": { "type": "string" }, "count": { "type": "integer" }, "me": { "type": "boolean", "description": "the caller reacted; absent in WebSocket events" } }
                },
                "ReactorList": { "type": "object", "required": ["items"], "properties": { "items": { "type": "array", "items": {
                    "type": "object", "required": ["emoji", "count", "user_ids"],
                    "properties": { "emoji": { "type": "string" }, "count": { "type": "integer" }, "user_ids": { "type": "array", "items": { "type": "string", "format": "uuid" } } }
                } } } },
                "MessageList": { "type": "object", "required": ["items"], "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/Message" } } } },
                "ReadMarkerList": { "type": "object", "required": ["items"], "properties": { "items": { "type": "array", "items": {
                    "type": "object", "required": ["user_id", "seq", "updated_at"],
                    "properties": { "user_id": { "type": "string", "format": "uuid" }, "seq": { "type": "integer" }, "updated_at": { "type": ["string", "null"], "format": "date-time" } }
                } } } },
                "MessageSlice": { "type": "object", "required": ["items", "has_more"], "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/Message" } }, "has_more": { "type": "boolean" } } },
                "RoomEvent": {
                    "type": "object",
                    "required": ["room_id", "seq", "kind", "created_at"],
                    "description": "message.created/updated/deleted carry `message`; member.* events carry `user_id` (member.role_changed also `role`); v1.1: reaction.added/removed carry `message_id`, `emoji`, `user_id`; message.pinned/unpinned `message_id`, `user_id`",
                    "properties": {
                        "room_id": { "type": "string", "format": "uuid" },
                        "seq": { "type": "integer" },
                        "kind": { "enum": ["message.created", "message.updated", "message.deleted", "member.joined", "member.left", "member.removed", "member.role_changed", "reaction.added", "reaction.removed", "message.pinned", "message.unpinned"] },
                        "created_at": { "type": "string", "format": "date-time" },
                        "message": { "$ref": "#/components/schemas/Message" },
                        "user_id": { "type": "string", "format": "uuid" },
                        "message_id": { "type": "string", "format": "uuid", "description": "reaction.* and message.pinned/unpinned" },
                        "emoji": { "type": "string", "description": "reaction.*" }
                    }
                },
                "SearchHit": {
                    "type": "object", "required": ["message", "room_id", "highlights"],
                    "properties": {
                        "message": { "$ref": "#/components/schemas/Message" },
                        "room_id": { "type": "string", "format": "uuid" },
                        "highlights": { "type": "array", "description": "the matched words in the body: [start, end) in Unicode scalar values (JavaScript: Array.from(body).slice(start, end)), sorted, not overlapping", "items": { "type": "object", "required": ["start", "end"], "properties": { "start": { "type": "integer" }, "end": { "type": "integer" } } } }
                    }
                },
                "SearchPage": { "type": "object", "required": ["items", "next_cursor"], "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/SearchHit" } }, "next_cursor": { "type": ["string", "null"] } } },
                "EventSlice": { "type": "object", "required": ["items", "has_more"], "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/RoomEvent" } }, "has_more": { "type": "boolean" } } },
                "CreateRoom": {
                    "type": "object", "required": ["name", "visibility"],
                    "properties": { "name": { "type": "string", "minLength": 1, "maxLength": 80 }, "visibility": { "enum": ["public", "private"] }, "topic": { "type": "string", "maxLength": 500 } }
                },
                "UserRef": { "type": "object", "required": ["user_id"], "properties": { "user_id": { "type": "string", "format": "uuid" } } },
                "RoleChange": { "type": "object", "required": ["role"], "properties": { "role": { "enum": ["admin", "member"] } } },
                "SendMessage": {
                    "type": "object", "required": ["body"],
                    "properties": { "body": { "type": "string" }, "client_msg_id": { "type": "string", "maxLength": 128 }, "reply_to": { "type": "string", "format": "uuid" },
                                    "thread_root_id": { "type": "string", "format": "uuid", "description": "reply in the thread of this top-level message of the room" } }
                },
                "EditMessage": { "type": "object", "required": ["body"], "properties": { "body": { "type": "string" } } },
                "ReadMarker": { "type": "object", "required": ["seq"], "properties": { "seq": { "type": "integer", "minimum": 0 } } }
            }
        }
    })
}
