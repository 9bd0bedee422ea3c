//! Message search (`GET /chat/search`) through HTTP on the real service, both backends:
//! words, prefixes, phrases, case, accents, scripts, ranking, highlights, the index
//! following edits and deletions, membership, the room filter, validation and pages.
#![allow(clippy::unwrap_used, clippy::cloned_ref_to_slice_refs)]

mod common;

use std::collections::HashSet;

use kit::db::Backend;
use serde_json::{Value, json};

kit::backend_tests!(
    words_prefixes_phrases_case_and_accents,
    cjk_cyrillic_and_arabic,
    better_match_first_then_newest_with_exact_highlights,
    edits_are_reindexed_and_deletions_removed,
    only_rooms_the_caller_is_in_now,
    query_and_limit_are_validated,
    pages_follow_the_cursor_without_duplicates,
    thread_replies_are_found_with_their_thread_and_reactions,
);

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Searches and returns the status and body.
async fn search(app: &common::App, u: &common::User, q: &str, extra: &str) -> (u16, Value) {
    app.get(&format!("/chat/search?q={}{extra}", encode(q)), u)
        .await
}

/// The ids of the messages found (asserting 200).
async fn found(app: &common::App, u: &common::User, q: &str) -> Vec<String> {
    let (s, b) = search(app, u, q, "").await;
    assert_eq!(s, 200, "{q}: {b}");
    ids(&b)
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["message"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn id(m: &Value) -> String {
    m["id"].as_str().unwrap().to_owned()
}

fn set(v: &[&String]) -> HashSet<String> {
    v.iter().map(|s| (*s).clone()).collect()
}

async fn words_prefixes_phrases_case_and_accents(backend: Backend) {
    let Some(app) = common::start(backend, "search_words").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let deploying = id(&app
        .send(&room, &alice, "Deploying the new release tonight")
        .await);
    let cafe = id(&app.send(&room, &alice, "Café au lait at the ÉCOLE").await);
    let notes = id(&app.send(&room, &alice, "the release notes are ready").await);
    let reversed = id(&app.send(&room, &alice, "notes, release!").await);
    let street = id(&app.send(&room, &alice, "Meet at the Straße corner").await);

    let got = found(&app, &alice, "release").await;
    assert_eq!(
        set(&got.iter().collect::<Vec<_>>()),
        set(&[&deploying, &notes, &reversed])
    );
    // A word is also a prefix; case does not matter.
    assert_eq!(found(&app, &alice, "DEPLOY").await, [deploying.clone()]);
    assert_eq!(found(&app, &alice, "depl").await, [deploying.clone()]);
    // A quoted phrase needs its words in a row and whole.
    assert_eq!(
        found(&app, &alice, "\"release notes\"").await,
        [notes.clone()]
    );
    assert!(found(&app, &alice, "\"release note\"").await.is_empty());
    // Several words: all must match, in any order.
    let got = found(&app, &alice, "Notes RELEASE").await;
    assert_eq!(
        set(&got.iter().collect::<Vec<_>>()),
        set(&[&notes, &reversed])
    );
    // Accents either way.
    assert_eq!(found(&app, &alice, "cafe").await, [cafe.clone()]);
    assert_eq!(found(&app, &alice, "CAFÉ").await, [cafe.clone()]);
    assert_eq!(found(&app, &alice, "école").await, [cafe.clone()]);
    assert_eq!(found(&app, &alice, "strasse").await, [street.clone()]);
    assert_eq!(found(&app, &alice, "straße").await, [street]);
    assert!(found(&app, &alice, "nothingmatches").await.is_empty());
    // Punctuation only: no words, nothing found (not an error).
    assert!(found(&app, &alice, "?!").await.is_empty());
    app.stop().await;
}

async fn cjk_cyrillic_and_arabic(backend: Backend) {
    let Some(app) = common::start(backend, "search_scripts").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let tokyo = id(&app.send(&room, &alice, "我在東京工作").await);
    let kyoto = id(&app.send(&room, &alice, "京都和東北").await);
    let russian = id(&app.send(&room, &alice, "Привет, Мир! Ёлка").await);
    let arabic = id(&app.send(&room, &alice, "مرحبا بالعالم").await);

    let (s, b) = search(&app, &alice, "東京", "").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(ids(&b), [tokyo.clone()]);
    assert_eq!(b["items"][0]["highlights"], json!([{"start": 2, "end": 4}]));
    // The ideographs as a phrase: both present but not in this order is no match.
    assert!(found(&app, &alice, "京東").await.is_empty());
    // A single ideograph is a word.
    let got = found(&app, &alice, "京").await;
    assert_eq!(set(&got.iter().collect::<Vec<_>>()), set(&[&tokyo, &kyoto]));
    let (s, b) = search(&app, &alice, "мир", "").await;
    assert_eq!(s, 200);
    assert_eq!(ids(&b), [russian.clone()]);
    assert_eq!(
        b["items"][0]["highlights"],
        json!([{"start": 8, "end": 11}])
    );
    // ё decomposes to е + a combining mark.
    assert_eq!(found(&app, &alice, "елка").await, [russian]);
    let (s, b) = search(&app, &alice, "بالعالم", "").await;
    assert_eq!(s, 200);
    assert_eq!(ids(&b), [arabic]);
    assert_eq!(
        b["items"][0]["highlights"],
        json!([{"start": 6, "end": 13}])
    );
    app.stop().await;
}

async fn better_match_first_then_newest_with_exact_highlights(backend: Backend) {
    let Some(app) = common::start(backend, "search_ranking").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let weak = id(&app
        .send(
            &room,
            &alice,
            "we could maybe deploy something else later this week or next",
        )
        .await);
    let strong_old = id(&app.send(&room, &alice, "deploy deploy deploy").await);
    let strong_new = id(&app.send(&room, &alice, "deploy deploy deploy").await);
    // Equal scores: newest first; the weaker match last.
    assert_eq!(
        found(&app, &alice, "deploy").await,
        [strong_new, strong_old, weak]
    );

    // An exact word ranks above a longer word it only starts (even an older one).
    let exact = id(&app.send(&room, &alice, "planning release").await);
    let longer = id(&app.send(&room, &alice, "planning releases").await);
    assert_eq!(
        found(&app, &alice, "release planning").await,
        [exact, longer]
    );

    // Highlights: every matched word, in scalar offsets, phrases as one range.
    let body = "Hello wörld 👋, hello New York!";
    let m = id(&app.send(&room, &alice, body).await);
    let (s, b) = search(&app, &alice, "HELLO \"new york\"", "").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(ids(&b), [m.clone()]);
    let hl = &b["items"][0]["highlights"];
    assert_eq!(
        hl,
        &json!([{"start": 0, "end": 5}, {"start": 15, "end": 20}, {"start": 21, "end": 29}])
    );
    let chars: Vec<char> = body.chars().collect();
    let slice = |s: usize, e: usize| chars[s..e].iter().collect::<String>();
    assert_eq!(slice(15, 20), "hello");
    assert_eq!(slice(21, 29), "New York");
    assert_eq!(b["items"][0]["room_id"], room.as_str());
    assert_eq!(b["items"][0]["message"]["body"], body);
    assert_eq!(b["items"][0]["message"]["sender_id"], alice.id.to_string());
    // A prefix highlights the whole word.
    let (_, b) = search(&app, &alice, "wor", "").await;
    assert_eq!(
        b["items"][0]["highlights"],
        json!([{"start": 6, "end": 11}])
    );
    app.stop().await;
}

async fn edits_are_reindexed_and_deletions_removed(backend: Backend) {
    let Some(app) = common::start(backend, "search_edits").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let m = id(&app.send(&room, &alice, "alpha bravo").await);
    assert_eq!(found(&app, &bob, "bravo").await, [m.clone()]);
    let (s, b) = app
        .patch(
            &format!("/chat/rooms/{room}/messages/{m}"),
            json!({"body": "alpha charlie"}),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(found(&app, &bob, "bravo").await.is_empty());
    let (s, b) = search(&app, &bob, "charlie", "").await;
    assert_eq!(s, 200);
    assert_eq!(ids(&b), [m.clone()]);
    assert_eq!(b["items"][0]["message"]["body"], "alpha charlie");
    assert!(b["items"][0]["message"]["edited_at"].is_string());

    let (s, _) = app
        .delete(&format!("/chat/rooms/{room}/messages/{m}"), &alice)
        .await;
    assert_eq!(s, 204);
    assert!(found(&app, &bob, "alpha").await.is_empty());
    assert!(found(&app, &bob, "charlie").await.is_empty());
    // Other messages stay findable.
    let other = id(&app.send(&room, &bob, "alpha again").await);
    assert_eq!(found(&app, &alice, "alpha").await, [other]);
    app.stop().await;
}

async fn only_rooms_the_caller_is_in_now(backend: Backend) {
    let Some(app) = common::start(backend, "search_membership").await else {
        return;
    };
    let [alice, bob, carol] = app.users(["alice", "bob", "carol"]).await;
    let public = app.room(&alice, "pub", "public").await;
    let private = app.room(&alice, "priv", "private").await;
    app.join(&public, &bob).await;
    let in_public = id(&app.send(&public, &alice, "secret plan one").await);
    let in_private = id(&app.send(&private, &alice, "secret plan two").await);

    let got = found(&app, &alice, "secret").await;
    assert_eq!(
        set(&got.iter().collect::<Vec<_>>()),
        set(&[&in_public, &in_private])
    );
    assert_eq!(found(&app, &bob, "secret").await, [in_public.clone()]);
    assert!(found(&app, &carol, "secret").await.is_empty());

    // The room filter, and its errors for non-members (as history).
    let (s, b) = search(&app, &alice, "secret", &format!("&room_id={private}")).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&b), [in_private.clone()]);
    assert_eq!(b["items"][0]["room_id"], private.as_str());
    let (s, b) = search(&app, &bob, "secret", &format!("&room_id={private}")).await;
    assert_eq!((s, b["code"].as_str()), (404, Some("room_not_found")));
    let (s, b) = search(&app, &carol, "secret", &format!("&room_id={public}")).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("not_member")));
    let (s, b) = search(
        &app,
        &alice,
        "secret",
        &format!("&room_id={}", uuid::Uuid::now_v7()),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (404, Some("room_not_found")));

    // Leaving a room: its messages are no longer found.
    let (s, b) = app
        .post(&format!("/chat/rooms/{public}/leave"), json!({}), &bob)
        .await;
    assert!(s == 200 || s == 204, "{s} {b}");
    assert!(found(&app, &bob, "secret").await.is_empty());
    app.stop().await;
}

async fn query_and_limit_are_validated(backend: Backend) {
    let Some(app) = common::start(backend, "search_validation").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    app.send(&room, &alice, "hello").await;
    for path in [
        "/chat/search".to_owned(),
        "/chat/search?q=".to_owned(),
        "/chat/search?q=%20%20".to_owned(),
        format!("/chat/search?q={}", "a".repeat(201)),
        format!("/chat/search?q={}", encode(&"é".repeat(201))),
    ] {
        let (s, b) = app.get(&path, &alice).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (400, Some("validation_failed")),
            "{path}"
        );
        assert_eq!(b["errors"][0]["field"], "q", "{path}");
    }
    // 200 characters (not bytes) is allowed.
    let (s, _) = app
        .get(
            &format!("/chat/search?q={}", encode(&"é".repeat(200))),
            &alice,
        )
        .await;
    assert_eq!(s, 200);
    for limit in ["0", "101", "-1"] {
        let (s, b) = app
            .get(&format!("/chat/search?q=hello&limit={limit}"), &alice)
            .await;
        assert_eq!((s, b["code"].as_str()), (400, Some("validation_failed")));
        assert_eq!(b["errors"][0]["field"], "limit");
    }
    let (s, b) = app.get("/chat/search?q=hello&cursor=nope", &alice).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_cursor")));
    let (s, _) = app
        .call(reqwest::Method::GET, "/chat/search?q=hello", None, None)
        .await;
    assert_eq!(s, 401);
    app.stop().await;
}

async fn pages_follow_the_cursor_without_duplicates(backend: Backend) {
    let Some(app) = common::start_unthrottled(backend, "search_pages").await else {
        return;
    };
    let (alice, room) = app.alice_with_a_room().await;
    let mut sent = HashSet::new();
    for i in 0..25 {
        // Two score levels, so pages cross from one to the other.
        let body = if i % 2 == 0 {
            format!("token {i}")
        } else {
            format!("token with more words around it {i}")
        };
        sent.insert(id(&app.send(&room, &alice, &body).await));
    }
    // Default limit: 20.
    let (s, b) = search(&app, &alice, "token", "").await;
    assert_eq!(s, 200);
    assert_eq!(ids(&b).len(), 20);
    assert!(b["next_cursor"].is_string());

    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (s, b) = search(&app, &alice, "token", &format!("&limit=10&cursor={cursor}")).await;
        assert_eq!(s, 200, "{b}");
        seen.extend(ids(&b));
        pages += 1;
        match b["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
        assert!(pages < 10, "the cursor does not advance");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), sent);
    app.stop().await;
}

/// Thread replies are searchable like any message, and a hit carries the whole v1.1
/// Message: its thread, and reactions with the caller's `me`.
async fn thread_replies_are_found_with_their_thread_and_reactions(backend: Backend) {
    let Some(app) = common::start(backend, "search_thread_replies").await else {
        return;
    };
    let (alice, bob, room) = app.alice_and_bob_in_a_room().await;
    let root = app.send(&room, &alice, "the root of it").await;
    let (s, reply) = app
        .post(
            &format!("/chat/rooms/{room}/messages"),
            json!({"body": "zanzibar logistics in the thread", "thread_root_id": root["id"]}),
            &bob,
        )
        .await;
    assert_eq!(s, 201, "{reply}");
    let (s, _) = app
        .call(
            reqwest::Method::PUT,
            &format!(
                "/chat/rooms/{room}/messages/{}/reactions/%F0%9F%91%8D",
                id(&reply)
            ),
            None,
            Some(&alice.token),
        )
        .await;
    assert_eq!(s, 204);
    for (u, me) in [(&alice, true), (&bob, false)] {
        let (s, page) = search(&app, u, "zanzibar", "").await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(ids(&page), vec![id(&reply)]);
        let m = &page["items"][0]["message"];
        assert_eq!(m["thread_root_id"], root["id"]);
        assert_eq!(
            m["reactions"],
            json!([{"emoji": "👍", "count": 1, "me": me}])
        );
    }
    app.stop().await;
}
