//! Every notification rule of API.md through the service's HTTP API, with chat's events
//! published on an in-process bus, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::{App, Msg, block, room_read};
use kit::db::Backend;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

kit::backend_tests!(
    dm_notifies_the_other_member,
    mention_reply_and_thread_rules,
    never_own_messages,
    blocked_senders_never_notify,
    blocks_made_before_the_service_are_copied_once,
    levels_and_mutes,
    duplicate_delivery_creates_one,
    edits_add_and_withdraw_mentions,
    deletion_withdraws_unread,
    reading_the_room_reads_its_notifications,
    previews_off_gives_empty_previews,
);

async fn dm_notifies_the_other_member(backend: Backend) {
    let Some(app) = App::start(backend, "dm_notifies_the_other_member").await else {
        return;
    };
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let room = Uuid::now_v7();
    let m = Msg::dm(room, 3, &alice, &bob);
    app.apply(&m.created()).await;
    let items = app.inbox(&bob).await;
    assert_eq!(items.len(), 1);
    let n = &items[0];
    assert_eq!(n["kind"], "dm");
    assert_eq!(n["room_id"], room.to_string());
    assert_eq!(n["message_id"], m.message_id.to_string());
    assert_eq!(n["seq"], 3);
    assert_eq!(n["actor_id"], alice.id.to_string());
    assert_eq!(n["preview"], "message 3");
    assert!(n["read_at"].is_null());
    assert!(n["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.unread(&bob).await, 1);
    assert!(app.inbox(&alice).await.is_empty());
    assert_eq!(app.counts_published(&bob, 1).await, [1]);
    app.stop().await;
}

async fn mention_reply_and_thread_rules(backend: Backend) {
    let Some(app) = App::start(backend, "mention_reply_and_thread_rules").await else {
        return;
    };
    let [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(|n| app.user(n));
    let room = Uuid::now_v7();
    // b is mentioned and also the author of the replied-to message: one notification,
    // `mention`. c started the thread; d wrote the message a later reply answers; e is a
    // bystander.
    let mut m = Msg::channel(room, 10, &a).mention(&[&b]);
    m.reply_to = Some(Uuid::now_v7());
    m.reply_to_sender = Some(b.id);
    m.thread_root_id = Some(Uuid::now_v7());
    m.thread_root_sender = Some(c.id);
    app.apply(&m.created()).await;
    let kinds = |items: Vec<serde_json::Value>| {
        items
            .iter()
            .map(|n| n["kind"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(app.inbox(&b).await), ["mention"]);
    assert_eq!(kinds(app.inbox(&c).await), ["reply"]);
    // A plain reply to d's message.
    let mut r = Msg::channel(room, 11, &a);
    r.reply_to = Some(Uuid::now_v7());
    r.reply_to_sender = Some(d.id);
    app.apply(&r.created()).await;
    assert_eq!(kinds(app.inbox(&d).await), ["reply"]);
    // A plain channel message tells nobody at the default level (mentions).
    app.apply(&Msg::channel(room, 12, &a).created()).await;
    assert!(app.inbox(&e).await.is_empty());
    assert_eq!(app.inbox(&b).await.len(), 1);
    // `@room` arrives resolved to every member.
    let mut all = Msg::channel(room, 13, &a).mention(&[&b, &c, &d, &e]);
    all.mentioned_room = true;
    app.apply(&all.created()).await;
    for u in [&b, &c, &d, &e] {
        assert_eq!(app.inbox(u).await[0]["kind"], "mention", "{}", u.username);
    }
    assert_eq!(app.unread(&b).await, 2);
    assert_eq!(app.unread(&e).await, 1);
    app.stop().await;
}

async fn never_own_messages(backend: Backend) {
    let Some(app) = App::start(backend, "never_own_messages").await else {
        return;
    };
    let (a, b) = (app.user("a"), app.user("b"));
    let room = Uuid::now_v7();
    let mut m = Msg::channel(room, 1, &a).mention(&[&a, &b]);
    m.reply_to_sender = Some(a.id);
    m.thread_root_sender = Some(a.id);
    app.apply(&m.created()).await;
    // Level `all` in the room does not make one's own messages notify either.
    app.chat.join(room, &a, "channel");
    let (s, body) = app
        .put(
            &a,
            &format!("/notifications/rooms/{room}"),
            json!({"level": "all"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    app.apply(&Msg::channel(room, 2, &a).created()).await;
    assert!(app.inbox(&a).await.is_empty());
    assert_eq!(app.inbox(&b).await.len(), 1);
    app.stop().await;
}

async fn blocked_senders_never_notify(backend: Backend) {
    let Some(app) = App::start(backend, "blocked_senders_never_notify").await else {
        return;
    };
    let (a, b, c) = (app.user("a"), app.user("b"), app.user("c"));
    let room = Uuid::now_v7();
    app.apply(&block("user.blocked", &b, &a)).await;
    app.apply(&Msg::channel(room, 1, &a).mention(&[&b, &c]).created())
        .await;
    app.apply(&Msg::dm(Uuid::now_v7(), 1, &a, &b).created())
        .await;
    assert!(app.inbox(&b).await.is_empty());
    assert_eq!(app.inbox(&c).await.len(), 1);
    // Blocking is one way: a still hears from b.
    app.apply(&Msg::channel(room, 2, &b).mention(&[&a]).created())
        .await;
    assert_eq!(app.inbox(&a).await.len(), 1);
    // Unblocked: notified again. A `user.blocked` older than the unblock that arrives
    // after it (no order across sources) changes nothing.
    let stale = block("user.blocked", &b, &a);
    app.apply(&block("user.unblocked", &b, &a)).await;
    app.apply(&stale).await;
    app.apply(&Msg::channel(room, 3, &a).mention(&[&b]).created())
        .await;
    assert_eq!(app.inbox(&b).await.len(), 1);
    app.stop().await;
}

async fn blocks_made_before_the_service_are_copied_once(backend: Backend) {
    // Five blocks at the user service before notifications ever ran (3 pages of 2):
    // b blocks a, and four pairs of strangers.
    let (a_id, b_id) = (Uuid::now_v7(), Uuid::now_v7());
    let mut blocks = vec![(b_id, a_id)];
    blocks.extend((0..4).map(|_| (Uuid::now_v7(), Uuid::now_v7())));
    let Some(app) = App::start_full(
        backend,
        "blocks_made_before_the_service_are_copied_once",
        blocks,
        |_| {},
    )
    .await
    else {
        return;
    };
    let name = |id: Uuid, n: &str| common::User {
        id,
        username: n.to_owned(),
        token: app.issuer.token(id, n),
    };
    let (a, b, c) = (name(a_id, "a"), name(b_id, "b"), app.user("c"));
    // Wait for the copy: its `sync_state` row is written with the last page.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !kit::backfill::done(app.db.pool(), notifications::backfill::BLOCKS)
        .await
        .unwrap()
    {
        assert!(std::time::Instant::now() < deadline, "blocks never copied");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.chat
            .block_pages
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    let room = Uuid::now_v7();
    app.apply(&Msg::channel(room, 1, &a).mention(&[&b, &c]).created())
        .await;
    assert_eq!(app.unread(&b).await, 0, "b blocks a");
    assert_eq!(app.unread(&c).await, 1, "the control");
    // A later unblock event overrides the copied block.
    app.apply(&block("user.unblocked", &b, &a)).await;
    app.apply(&Msg::channel(room, 2, &a).mention(&[&b]).created())
        .await;
    assert_eq!(app.unread(&b).await, 1);
    app.stop().await;
}

async fn levels_and_mutes(backend: Backend) {
    let Some(app) = App::start(backend, "levels_and_mutes").await else {
        return;
    };
    let (a, b, c) = (app.user("a"), app.user("b"), app.user("c"));
    let (room, dm) = (Uuid::now_v7(), Uuid::now_v7());
    for u in [&a, &b, &c] {
        app.chat.join(room, u, "channel");
    }
    app.chat.join(dm, &b, "dm");
    let level = |u: &common::User, r: Uuid, body: serde_json::Value| {
        let app = &app;
        let u = u.clone();
        async move {
            let (s, v) = app
                .put(&u, &format!("/notifications/rooms/{r}"), body)
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v
        }
    };
    // b: everything in the channel; c: nothing.
    level(&b, room, json!({"level": "all"})).await;
    level(&c, room, json!({"level": "none"})).await;
    app.apply(&Msg::channel(room, 1, &a).created()).await;
    app.apply(&Msg::channel(room, 2, &a).mention(&[&c]).created())
        .await;
    let inbox_b = app.inbox(&b).await;
    assert_eq!(inbox_b.len(), 2);
    assert_eq!(inbox_b[0]["kind"], "message");
    assert!(app.inbox(&c).await.is_empty());
    // Muted for an hour: nothing, even for a mention; the level is kept.
    let hour = kit::time::rfc3339(kit::time::now_ms() + 3_600_000);
    let v = level(&b, room, json!({"muted_until": hour})).await;
    assert_eq!(v["level"], "all");
    app.apply(&Msg::channel(room, 3, &a).mention(&[&b]).created())
        .await;
    assert_eq!(app.inbox(&b).await.len(), 2);
    // A mute that has ended does not hold.
    let past = kit::time::rfc3339(kit::time::now_ms() - 1_000);
    level(&b, room, json!({"muted_until": past})).await;
    app.apply(&Msg::channel(room, 4, &a).mention(&[&b]).created())
        .await;
    assert_eq!(app.inbox(&b).await.len(), 3);
    // A DM at `mentions`: a plain DM tells nothing, a mention in it does.
    level(&b, dm, json!({"level": "mentions"})).await;
    app.apply(&Msg::dm(dm, 1, &a, &b).created()).await;
    assert_eq!(app.inbox(&b).await.len(), 3);
    app.apply(&Msg::dm(dm, 2, &a, &b).mention(&[&b]).created())
        .await;
    let items = app.inbox(&b).await;
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["kind"], "mention");
    app.stop().await;
}

async fn duplicate_delivery_creates_one(backend: Backend) {
    let Some(app) = App::start(backend, "duplicate_delivery_creates_one").await else {
        return;
    };
    let (a, b) = (app.user("a"), app.user("b"));
    let m = Msg::dm(Uuid::now_v7(), 1, &a, &b).mention(&[&b]);
    let e = m.created();
    for _ in 0..3 {
        app.apply(&e).await;
    }
    // The same message under another event id (a re-published outbox row is the same id;
    // this is the unique key's turn): still one.
    app.apply(&m.created()).await;
    assert_eq!(app.inbox(&b).await.len(), 1);
    assert_eq!(app.inbox(&b).await[0]["kind"], "dm");
    assert_eq!(app.counts_published(&b, 1).await, [1]);
    // Concurrent duplicates.
    let m2 = Msg::dm(m.room_id, 2, &a, &b);
    let e2 = m2.created();
    futures_join(&app, &e2).await;
    assert_eq!(app.unread(&b).await, 2);
    app.stop().await;
}

async fn futures_join(app: &App, e: &bus::Envelope) {
    let (x, y) = tokio::join!(app.bus.publish(e), app.bus.publish(e));
    x.unwrap();
    y.unwrap();
    app.wait_processed(e).await;
}

async fn edits_add_and_withdraw_mentions(backend: Backend) {
    let Some(app) = App::start(backend, "edits_add_and_withdraw_mentions").await else {
        return;
    };
    let (a, b, c) = (app.user("a"), app.user("b"), app.user("c"));
    let room = Uuid::now_v7();
    let m = Msg::channel(room, 5, &a).mention(&[&b]);
    app.apply(&m.created()).await;
    // Edit: b out, c in.
    app.apply(&m.updated(6, &[&c], "edited text")).await;
    assert!(app.inbox(&b).await.is_empty());
    assert_eq!(app.unread(&b).await, 0);
    let items = app.inbox(&c).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["kind"], "mention");
    assert_eq!(items[0]["preview"], "edited text");
    assert_eq!(app.counts_published(&b, 0).await, [1, 0]);
    // A read mention is not withdrawn by an edit.
    let (s, _) = app
        .post(&c, "/notifications/read", json!({"all": true}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let m2 = Msg {
        mentioned: vec![c.id],
        ..m.clone()
    };
    app.apply(&m2.updated(7, &[], "no mentions")).await;
    let items = app.inbox(&c).await;
    assert_eq!(items.len(), 1);
    assert!(!items[0]["read_at"].is_null());
    // A reply notification stays when the mention goes.
    let mut r = Msg::channel(room, 8, &a).mention(&[&b]);
    r.reply_to_sender = Some(b.id);
    app.apply(&r.created()).await;
    assert_eq!(app.inbox(&b).await[0]["kind"], "mention");
    app.apply(&r.updated(9, &[], "x")).await;
    let items = app.inbox(&b).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["kind"], "reply");
    assert_eq!(app.unread(&b).await, 1);
    app.stop().await;
}

async fn deletion_withdraws_unread(backend: Backend) {
    let Some(app) = App::start(backend, "deletion_withdraws_unread").await else {
        return;
    };
    let (a, b, c) = (app.user("a"), app.user("b"), app.user("c"));
    let room = Uuid::now_v7();
    let m = Msg::channel(room, 1, &a).mention(&[&b, &c]);
    app.apply(&m.created()).await;
    let (s, _) = app
        .post(&c, "/notifications/read", json!({"all": true}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    app.apply(&m.deleted(2)).await;
    assert!(app.inbox(&b).await.is_empty());
    assert_eq!(app.unread(&b).await, 0);
    assert_eq!(app.counts_published(&b, 0).await, [1, 0]);
    // The read one stays, without the deleted text.
    let items = app.inbox(&c).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["preview"], "");
    app.stop().await;
}

async fn reading_the_room_reads_its_notifications(backend: Backend) {
    let Some(app) = App::start(backend, "reading_the_room_reads_its_notifications").await else {
        return;
    };
    let (a, b) = (app.user("a"), app.user("b"));
    let (room, other) = (Uuid::now_v7(), Uuid::now_v7());
    app.apply(&Msg::channel(room, 5, &a).mention(&[&b]).created())
        .await;
    app.apply(&Msg::channel(room, 9, &a).mention(&[&b]).created())
        .await;
    app.apply(&Msg::channel(other, 1, &a).mention(&[&b]).created())
        .await;
    assert_eq!(app.unread(&b).await, 3);
    app.apply(&room_read(room, &b, 5)).await;
    assert_eq!(app.unread(&b).await, 2);
    let (s, body) = app.get(&b, "/notifications?unread=true").await;
    assert_eq!(s, StatusCode::OK);
    let seqs: Vec<i64> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 9]);
    // Another user's read marker reads nothing of b's.
    app.apply(&room_read(room, &a, 100)).await;
    assert_eq!(app.unread(&b).await, 2);
    app.apply(&room_read(room, &b, 100)).await;
    assert_eq!(app.unread(&b).await, 1);
    assert_eq!(app.counts_published(&b, 1).await, [1, 2, 3, 2, 1]);
    app.stop().await;
}

async fn previews_off_gives_empty_previews(backend: Backend) {
    let Some(app) = App::start(backend, "previews_off_gives_empty_previews").await else {
        return;
    };
    let (a, b) = (app.user("a"), app.user("b"));
    let (s, body) = app
        .put(&b, "/notifications/preferences", json!({"previews": false}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let m = Msg::dm(Uuid::now_v7(), 1, &a, &b);
    app.apply(&m.created()).await;
    assert_eq!(app.inbox(&b).await[0]["preview"], "");
    // An edit does not bring the text back either.
    app.apply(&m.updated(2, &[], "edited")).await;
    assert_eq!(app.inbox(&b).await[0]["preview"], "");
    app.stop().await;
}
