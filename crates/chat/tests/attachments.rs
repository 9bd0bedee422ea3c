//! Files v1.1 in chat: sends (REST and WebSocket) with `attachment_ids`, checked with the
//! files service's internal lookup — here a tiny fake of it that records each call — and
//! the attachments on every representation of the message and on the bus events the
//! files service consumes.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kit::db::Backend;
use serde_json::{Value, json};
use uuid::Uuid;

kit::backend_tests!(
    own_uploads_attach_everywhere,
    someone_elses_or_unknown_files_are_refused,
    more_than_ten_or_duplicates_are_refused_without_asking,
    body_or_attachments_required,
    files_down_is_503_with_retry_after,
    websocket_sends_attach_and_report_errors,
    deletion_clears_attachments_and_names_them,
    edits_keep_attachments,
);

/// Stands in for the files service's `POST /internal/files/lookup`: the files it knows
/// (uploader, `File` JSON) and every call it got (`owner_id`, `ids`).
#[derive(Default)]
struct FakeFiles {
    files: Mutex<HashMap<Uuid, (Uuid, Value)>>,
    calls: Mutex<Vec<(Uuid, Vec<Uuid>)>>,
}

impl FakeFiles {
    /// A PNG `owner` uploaded; returns its id.
    fn upload(&self, owner: &common::User, filename: &str) -> Uuid {
        let id = Uuid::now_v7();
        let file = json!({
            "id": id, "filename": filename, "content_type": "image/png", "size": 1234,
            "sha256": "ab".repeat(32), "width": 64, "height": 48,
            "created_at": "2026-12-03T12:00:00Z",
            "url": format!("/files/{id}"), "thumbnail_url": format!("/files/{id}/thumbnail"),
        });
        self.files.lock().unwrap().insert(id, (owner.id, file));
        id
    }

    fn calls(&self) -> Vec<(Uuid, Vec<Uuid>)> {
        self.calls.lock().unwrap().clone()
    }
}

async fn start_files() -> (String, Arc<FakeFiles>) {
    use axum::extract::State;
    async fn lookup(
        State(fake): State<Arc<FakeFiles>>,
        axum::Json(q): axum::Json<Value>,
    ) -> axum::Json<Value> {
        let owner: Uuid = q["owner_id"].as_str().unwrap().parse().unwrap();
        let ids: Vec<Uuid> = serde_json::from_value(q["ids"].clone()).unwrap();
        fake.calls.lock().unwrap().push((owner, ids.clone()));
        let files = fake.files.lock().unwrap();
        let items: Vec<Value> = ids
            .iter()
            .filter_map(|id| files.get(id))
            .filter(|(o, _)| *o == owner)
            .map(|(_, f)| f.clone())
            .collect();
        axum::Json(json!({ "items": items }))
    }
    let fake: Arc<FakeFiles> = Arc::default();
    let app = axum::Router::new()
        .route("/internal/files/lookup", axum::routing::post(lookup))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, fake)
}

/// Chat with the fake files service beside it.
async fn start(backend: Backend, test: &str) -> Option<(common::App, Arc<FakeFiles>)> {
    let (url, fake) = start_files().await;
    let app = common::start_with(backend, test, |o| o.config.files_url = url).await?;
    Some((app, fake))
}

async fn post_message(
    app: &common::App,
    room: &str,
    u: &common::User,
    body: Value,
) -> (u16, Value) {
    app.post(&format!("/chat/rooms/{room}/messages"), body, u)
        .await
}

fn attachment_ids(m: &Value) -> Vec<String> {
    m["attachments"]
        .as_array()
        .unwrap_or_else(|| panic!("no attachments array in {m}"))
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn own_uploads_attach_everywhere(backend: Backend) {
    let Some((app, files)) = start(backend, "attach_everywhere").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let mut bobs_ws = app.connect(&bob).await;
    let events = app.observe_events();
    let (a, b) = (files.upload(&alice, "a.png"), files.upload(&alice, "b.png"));
    let (s, m) = post_message(
        &app,
        &room,
        &alice,
        json!({"body": "two pictures", "attachment_ids": [b, a]}),
    )
    .await;
    assert_eq!(s, 201, "{m}");
    // In the order sent, with the files service's description.
    assert_eq!(attachment_ids(&m), vec![b.to_string(), a.to_string()]);
    let first = &m["attachments"][0];
    assert_eq!(first["filename"], "b.png");
    assert_eq!(first["content_type"], "image/png");
    assert_eq!(
        (first["size"].as_i64(), first["width"].as_i64()),
        (Some(1234), Some(64))
    );
    assert_eq!(first["url"], format!("/files/{b}"));
    assert_eq!(first["thumbnail_url"], format!("/files/{b}/thumbnail"));
    // One lookup, as the sender, of exactly the ids sent.
    assert_eq!(files.calls(), vec![(alice.id, vec![b, a])]);

    // A plain send does not ask the files service and shows an empty list.
    let plain = app.send(&room, &bob, "no files").await;
    assert_eq!(plain["attachments"], json!([]));
    assert_eq!(files.calls().len(), 1, "plain sends cost no lookup");

    // History, the room list's last message (of alice's own message: before bob's), the
    // event log, search, pins and the WebSocket frame all carry them.
    let (s, page) = app.get(&format!("/chat/rooms/{room}/messages"), &bob).await;
    assert_eq!(s, 200, "{page}");
    let stored = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == m["id"])
        .unwrap();
    assert_eq!(stored["attachments"], m["attachments"]);
    let (s, log) = app.get(&format!("/chat/rooms/{room}/events"), &bob).await;
    assert_eq!(s, 200);
    let created = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "message.created" && e["message"]["id"] == m["id"])
        .unwrap();
    assert_eq!(created["message"]["attachments"], m["attachments"]);
    let (s, hits) = app.get("/chat/search?q=pictures", &bob).await;
    assert_eq!(s, 200, "{hits}");
    assert_eq!(hits["items"][0]["message"]["attachments"], m["attachments"]);
    let mid = m["id"].as_str().unwrap();
    let (s, _) = app
        .call(
            reqwest::Method::PUT,
            &format!("/chat/rooms/{room}/pins/{mid}"),
            None,
            Some(&alice.token),
        )
        .await;
    assert!(s == 204 || s == 200, "pin: {s}");
    let (s, pins) = app.get(&format!("/chat/rooms/{room}/pins"), &bob).await;
    assert_eq!(s, 200, "{pins}");
    assert_eq!(pins["items"][0]["attachments"], m["attachments"]);
    let (_, rooms) = app.get("/chat/rooms", &bob).await;
    assert_eq!(rooms["items"][0]["last_message"]["attachments"], json!([]));
    let only = post_message(&app, &room, &alice, json!({"attachment_ids": [a]}))
        .await
        .1;
    let (_, rooms) = app.get("/chat/rooms", &bob).await;
    assert_eq!(
        rooms["items"][0]["last_message"]["attachments"],
        only["attachments"]
    );
    // Its notification preview names the file instead of an empty body.
    let e = events
        .of("chat.message.created", only["id"].as_str().unwrap())
        .await;
    assert_eq!(e.data["preview"], "📎 a.png");

    let frame = loop {
        let f = bobs_ws.next_of("event").await;
        if f["event"]["message"]["id"] == m["id"] {
            break f;
        }
    };
    assert_eq!(frame["event"]["message"]["attachments"], m["attachments"]);

    // The bus event the files service consumes carries the files.
    let e = events.of("chat.message.created", mid).await;
    assert_eq!(e.data["attachments"], m["attachments"]);
    let e = events
        .of("chat.message.created", plain["id"].as_str().unwrap())
        .await;
    assert_eq!(e.data["attachments"], json!([]));
    app.stop().await;
}

async fn someone_elses_or_unknown_files_are_refused(backend: Backend) {
    let Some((app, files)) = start(backend, "attach_not_yours").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let mine = files.upload(&alice, "mine.png");
    let bobs = files.upload(&bob, "bobs.png");
    let unknown = Uuid::now_v7();
    for ids in [vec![bobs], vec![mine, unknown]] {
        let (s, e) = post_message(
            &app,
            &room,
            &alice,
            json!({"body": "x", "attachment_ids": ids}),
        )
        .await;
        assert_eq!(
            (s, e["code"].as_str()),
            (400, Some("invalid_attachment")),
            "{e}"
        );
        // The detail names the refused id, not the accepted one.
        let detail = e["detail"].as_str().unwrap();
        assert!(
            detail.contains(&ids.last().unwrap().to_string()),
            "{detail}"
        );
        assert!(!detail.contains(&mine.to_string()), "{detail}");
    }
    // Nothing was stored.
    let (_, page) = app
        .get(&format!("/chat/rooms/{room}/messages"), &alice)
        .await;
    assert!(page["items"].as_array().unwrap().is_empty(), "{page}");
    app.stop().await;
}

async fn more_than_ten_or_duplicates_are_refused_without_asking(backend: Backend) {
    let Some((app, files)) = start(backend, "attach_limits").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let ids: Vec<Uuid> = (0..11)
        .map(|i| files.upload(&alice, &format!("{i}.png")))
        .collect();
    let (s, e) = post_message(
        &app,
        &room,
        &alice,
        json!({"body": "x", "attachment_ids": &ids}),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("invalid_attachment")),
        "{e}"
    );
    assert!(e["detail"].as_str().unwrap().contains("at most 10"), "{e}");
    let (s, e) = post_message(
        &app,
        &room,
        &alice,
        json!({"body": "x", "attachment_ids": [ids[0], ids[1], ids[0]]}),
    )
    .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("invalid_attachment")),
        "{e}"
    );
    assert!(e["detail"].as_str().unwrap().contains("twice"), "{e}");
    assert!(
        files.calls().is_empty(),
        "refused before asking the files service"
    );
    // Exactly ten is fine.
    let (s, m) = post_message(
        &app,
        &room,
        &alice,
        json!({"body": "x", "attachment_ids": &ids[..10]}),
    )
    .await;
    assert_eq!(s, 201, "{m}");
    assert_eq!(m["attachments"].as_array().unwrap().len(), 10);
    app.stop().await;
}

async fn body_or_attachments_required(backend: Backend) {
    let Some((app, files)) = start(backend, "attach_body_optional").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let f = files.upload(&alice, "f.png");
    // Empty (or blank, or missing) body with an attachment: stored with body "".
    for body in [
        json!({"body": "  ", "attachment_ids": [f]}),
        json!({"attachment_ids": [f]}),
    ] {
        let (s, m) = post_message(&app, &room, &alice, body).await;
        assert_eq!(s, 201, "{m}");
        assert_eq!(m["body"], "");
        assert_eq!(attachment_ids(&m), vec![f.to_string()]);
    }
    // Neither: 400 naming the body, as before attachments existed.
    for body in [
        json!({"body": ""}),
        json!({"body": " ", "attachment_ids": []}),
        json!({}),
    ] {
        let (s, e) = post_message(&app, &room, &alice, body).await;
        assert_eq!(
            (s, e["code"].as_str()),
            (400, Some("validation_failed")),
            "{e}"
        );
        assert_eq!(e["errors"][0]["field"], "body", "{e}");
    }
    app.stop().await;
}

async fn files_down_is_503_with_retry_after(backend: Backend) {
    let down = common::closed_port_url().await;
    let Some(app) = common::start_with(backend, "attach_files_down", |o| {
        o.config.files_url = down;
        o.config.files_timeout_ms = 500;
    })
    .await
    else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    // More sends than the breaker's threshold: refused the same way, open or not.
    for _ in 0..4 {
        let res = app
            .http
            .post(format!("{}/chat/rooms/{room}/messages", app.url))
            .bearer_auth(&alice.token)
            .json(&json!({"body": "x", "attachment_ids": [Uuid::now_v7()]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 503);
        assert!(res.headers().get("retry-after").is_some());
        let (_, e) = common::read(res).await;
        assert_eq!(e["code"], "dependency_unavailable", "{e}");
    }
    // Sends without attachments do not depend on the files service.
    app.send(&room, &alice, "still here").await;
    let mut ws = app.connect(&alice).await;
    ws.send(
        json!({"type": "send", "room_id": room, "body": "", "client_msg_id": "w1",
                   "attachment_ids": [Uuid::now_v7()]}),
    )
    .await;
    let e = ws.next_of("error").await;
    assert_eq!(
        (e["client_msg_id"].as_str(), e["code"].as_str()),
        (Some("w1"), Some("dependency_unavailable")),
        "{e}"
    );
    assert_eq!(e["retry_after_ms"], 2000, "{e}");
    app.stop().await;
}

async fn websocket_sends_attach_and_report_errors(backend: Backend) {
    let Some((app, files)) = start(backend, "attach_ws").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let f = files.upload(&alice, "ws.png");
    let bobs = files.upload(&bob, "bobs.png");
    let mut ws = app.connect(&alice).await;
    ws.send(json!({"type": "send", "room_id": room, "client_msg_id": "a1", "attachment_ids": [f]}))
        .await;
    let ack = ws.next_of("ack").await;
    assert_eq!(ack["client_msg_id"], "a1");
    assert_eq!(ack["message"]["body"], "");
    assert_eq!(attachment_ids(&ack["message"]), vec![f.to_string()]);
    ws.send(json!({"type": "send", "room_id": room, "body": "hi", "client_msg_id": "a2", "attachment_ids": [bobs]}))
        .await;
    ws.expect_error(Some("a2"), "invalid_attachment").await;
    ws.send(json!({"type": "send", "room_id": room, "body": "", "client_msg_id": "a3"}))
        .await;
    ws.expect_error(Some("a3"), "validation_failed").await;
    // The connection stays usable.
    ws.send_message(&room, "after", "a4").await;
    assert_eq!(ws.next_of("ack").await["client_msg_id"], "a4");
    app.stop().await;
}

async fn deletion_clears_attachments_and_names_them(backend: Backend) {
    let Some((app, files)) = start(backend, "attach_deleted").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let events = app.observe_events();
    let f = files.upload(&alice, "gone.png");
    let (_, m) = post_message(
        &app,
        &room,
        &alice,
        json!({"body": "bye", "attachment_ids": [f]}),
    )
    .await;
    let mid = m["id"].as_str().unwrap();
    let mut ws = app.connect(&bob).await;
    // The owner deletes it (moderation), as the sender could.
    let (s, _) = app
        .delete(&format!("/chat/rooms/{room}/messages/{mid}"), &alice)
        .await;
    assert_eq!(s, 204);
    let e = events.of("chat.message.deleted", mid).await;
    assert_eq!(e.data["attachment_ids"], json!([f]));
    let frame = ws.next_of("event").await;
    assert_eq!(frame["event"]["kind"], "message.deleted");
    assert_eq!(frame["event"]["message"]["attachments"], json!([]));
    let (_, page) = app.get(&format!("/chat/rooms/{room}/messages"), &bob).await;
    let tomb = &page["items"][0];
    assert_eq!(
        (tomb["deleted"].as_bool(), tomb["attachments"].clone()),
        (Some(true), json!([]))
    );
    // Earlier events no longer show the files either (the tombstone replaces them).
    let (_, log) = app.get(&format!("/chat/rooms/{room}/events"), &bob).await;
    for e in log["items"].as_array().unwrap() {
        if e["message"]["id"] == m["id"] {
            assert_eq!(e["message"]["attachments"], json!([]), "{e}");
        }
    }
    // A message without files: the event says so with an empty list.
    let plain = app.send(&room, &bob, "plain").await;
    let pid = plain["id"].as_str().unwrap();
    app.delete(&format!("/chat/rooms/{room}/messages/{pid}"), &bob)
        .await;
    let e = events.of("chat.message.deleted", pid).await;
    assert_eq!(e.data["attachment_ids"], json!([]));
    app.stop().await;
}

async fn edits_keep_attachments(backend: Backend) {
    let Some((app, files)) = start(backend, "attach_edit").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let f = files.upload(&alice, "kept.png");
    let (_, m) = post_message(
        &app,
        &room,
        &alice,
        json!({"body": "v1", "attachment_ids": [f]}),
    )
    .await;
    let mid = m["id"].as_str().unwrap();
    let (s, edited) = app
        .patch(
            &format!("/chat/rooms/{room}/messages/{mid}"),
            json!({"body": "v2"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{edited}");
    assert_eq!(
        (edited["body"].as_str(), edited["attachments"].clone()),
        (Some("v2"), m["attachments"].clone())
    );
    let (_, page) = app
        .get(&format!("/chat/rooms/{room}/messages"), &alice)
        .await;
    assert_eq!(page["items"][0]["attachments"], m["attachments"]);
    app.stop().await;
}
