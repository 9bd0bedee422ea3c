//! Search quality through HTTP, on SQLite and PostgreSQL (same expectations on both).
#![allow(clippy::unwrap_used)]

mod common;

use common::{App, Sibling, User, assert_problem, usernames};
use kit::db::Backend;
use reqwest::StatusCode;

kit::backend_tests!(
    search_quality,
    search_ranking_and_pagination,
    search_input_bounds,
    search_index_follows_writes_across_instances
);

async fn find(app: &App, who: &User, q: &str) -> Vec<String> {
    let url = format!("/users/search?q={}", urlencode(q));
    let (s, body) = app.get(who, &url).await;
    assert_eq!(s, StatusCode::OK, "{q}: {body}");
    usernames(body["items"].as_array().unwrap())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn search_quality(backend: Backend) {
    let Some(app) = App::start(backend, "search_quality").await else {
        return;
    };
    let me = app.register("searcher", "Searcher").await;
    let _alice = app.register("alice", "Alice Liddell").await;
    app.register("alicia", "Alicia Keys").await;
    app.register("malice", "Mal Ice").await;
    app.register("christopher", "Christopher Robin").await;
    app.register("zoe_s", "Zoë Saldaña").await;
    app.register("yamada", "山田太郎").await;
    app.register("bob", "Bob").await;
    app.register("strasse", "Große Straße").await;

    // Prefix, then substring.
    assert_eq!(find(&app, &me, "ali").await, ["alice", "alicia", "malice"]);
    // Exact, then substring, then fuzzy ("alici" is one edit from "alice").
    assert_eq!(
        find(&app, &me, "alice").await,
        ["alice", "malice", "alicia"]
    );
    // Cursors carry across the tiers.
    let paged = app.all_pages(&me, "/users/search?q=alice", 1).await;
    assert_eq!(usernames(&paged), ["alice", "malice", "alicia"]);
    // Short queries: prefix only.
    assert_eq!(find(&app, &me, "al").await, ["alice", "alicia"]);
    assert_eq!(find(&app, &me, "b").await, ["bob"]);
    // One typo (transposition, substitution, deletion, insertion) from 4 characters.
    assert_eq!(find(&app, &me, "alcie").await, ["alice"]);
    assert_eq!(find(&app, &me, "alixe").await, ["alice"]);
    assert_eq!(find(&app, &me, "alic").await[..2], ["alice", "alicia"]);
    assert!(
        find(&app, &me, "alicee")
            .await
            .contains(&"alice".to_owned())
    );
    assert_eq!(find(&app, &me, "bobb").await, ["bob"]);
    // Two typos from 8 characters, one is not enough below.
    assert_eq!(find(&app, &me, "christphr").await, ["christopher"]);
    assert_eq!(find(&app, &me, "christofer").await, ["christopher"]);
    assert!(find(&app, &me, "bxbb").await.is_empty());
    assert!(find(&app, &me, "xyz").await.is_empty());
    // Display names, any word, case-insensitively.
    assert_eq!(find(&app, &me, "LIDDELL").await, ["alice"]);
    assert_eq!(find(&app, &me, "robin").await, ["christopher"]);
    assert_eq!(find(&app, &me, "Robni").await, ["christopher"]);
    // Accents and folded letters, both ways.
    assert_eq!(find(&app, &me, "saldana").await, ["zoe_s"]);
    assert_eq!(find(&app, &me, "ZOË").await, ["zoe_s"]);
    assert_eq!(find(&app, &me, "saldaña").await, ["zoe_s"]);
    assert_eq!(find(&app, &me, "strasse").await, ["strasse"]);
    assert_eq!(find(&app, &me, "große").await, ["strasse"]);
    // CJK: prefix and substrings.
    assert_eq!(find(&app, &me, "山田").await, ["yamada"]);
    assert_eq!(find(&app, &me, "太郎").await, ["yamada"]);
    assert_eq!(find(&app, &me, "田太郎").await, ["yamada"]);
    // Whitespace around the query is ignored.
    assert_eq!(find(&app, &me, "  alicia  ").await, ["alicia"]);
    app.stop().await;
}

async fn search_ranking_and_pagination(backend: Backend) {
    let Some(app) = App::start(backend, "search_ranking").await else {
        return;
    };
    let me = app.register("viewer", "Viewer").await;
    let sam = app.register("sam", "Sam").await;
    let samuel = app.register("samuel", "Samuel").await;
    let samantha = app.register("samantha", "Samantha").await;
    let _samir = app.register("samir", "Samir").await;
    let _osama = app.register("osama", "Osama").await;
    let _asam = app.register("asam", "Isam Samson").await;
    // Followers rank within a tier: samantha 2, samuel 1, samir 0.
    let f1 = app.register("fol1", "F").await;
    let f2 = app.register("fol2", "F").await;
    app.follow(&f1, &samantha).await;
    app.follow(&f2, &samantha).await;
    app.follow(&f1, &samuel).await;
    // exact > prefix (by followers) > substring (a later word counts as substring; equal
    // followers: by id, i.e. registration order).
    let all = find(&app, &me, "sam").await;
    assert_eq!(all, ["sam", "samantha", "samuel", "samir", "osama", "asam"]);
    // Pages of 2 give the same order with no duplicate or gap.
    let paged = usernames(&app.all_pages(&me, "/users/search?q=sam", 2).await);
    assert_eq!(paged, all);
    // Fuzzy matches come after every exact, prefix and substring match.
    let fuzzy = find(&app, &me, "samul").await;
    assert_eq!(fuzzy, ["samuel"]);
    let q = find(&app, &me, "samue").await;
    assert_eq!(q, ["samuel"]);
    // A user who blocks the caller disappears from the caller's results only.
    assert_eq!(
        app.put(&sam, &format!("/users/me/blocks/{}", me.id))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(find(&app, &me, "sam").await[0], "samantha");
    assert_eq!(find(&app, &f1, "sam").await[0], "sam");
    // The caller's own blocks do not hide people (they can still be found to unblock).
    assert_eq!(
        app.put(&me, &format!("/users/me/blocks/{}", samuel.id))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert!(
        find(&app, &me, "samuel")
            .await
            .contains(&"samuel".to_owned())
    );
    app.stop().await;
}

async fn search_input_bounds(backend: Backend) {
    let Some(app) = App::start(backend, "search_input_bounds").await else {
        return;
    };
    let me = app.register("bounds", "Bounds").await;
    for q in ["", "%20%20", &"a".repeat(65)] {
        let (s, body) = app.get(&me, &format!("/users/search?q={q}")).await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
        assert_eq!(body["errors"][0]["field"], "q");
    }
    let (s, body) = app.get(&me, "/users/search").await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
    let (s, _) = app
        .get(&me, &format!("/users/search?q={}", "a".repeat(64)))
        .await;
    assert_eq!(s, StatusCode::OK);
    // SQL and LIKE metacharacters are just characters.
    for q in ["%25", "_", "'%3B--", "a%25b", "%5C"] {
        let (s, body) = app.get(&me, &format!("/users/search?q={q}")).await;
        assert_eq!(s, StatusCode::OK, "{q}: {body}");
    }
    let (s, body) = app.get(&me, "/users/search?q=bo&cursor=nope").await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "invalid_cursor");
    let (s, body) = app.get(&me, "/users/search?q=bo&limit=1000").await;
    assert_problem(s, &body, StatusCode::BAD_REQUEST, "validation_failed");
    let (s, body) = app
        .send(reqwest::Method::GET, None, "/users/search?q=bo", None)
        .await;
    assert_problem(s, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

async fn find_on(sibling: &Sibling, who: &User, q: &str) -> Vec<String> {
    let (s, body) = sibling
        .get(who, &format!("/users/search?q={}", urlencode(q)))
        .await;
    assert_eq!(s, StatusCode::OK, "{q}: {body}");
    usernames(body["items"].as_array().unwrap())
}

/// Waits until the second instance answers `q` with `want` (it learns of the first
/// instance's writes through the change feed, polled every 250 ms).
async fn converges(sibling: &Sibling, who: &User, q: &str, want: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = find_on(sibling, who, q).await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "second instance still answers {got:?} for {q}, want {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn search_index_follows_writes_across_instances(backend: Backend) {
    let Some(app) = App::start(backend, "search_index_sync").await else {
        return;
    };
    let me = app.register("finder", "Finder").await;
    let one = app.register("u_one", "Zed One").await;
    let two = app.register("u_two", "Zed Two").await;
    // Started now: loads both from the database.
    let second = app.sibling().await;
    assert_eq!(find(&app, &me, "zed").await, ["u_one", "u_two"]);
    assert_eq!(find_on(&second, &me, "zed").await, ["u_one", "u_two"]);

    // The instance that made a write answers from it at once: a follow reorders...
    app.follow(&me, &two).await;
    assert_eq!(find(&app, &me, "zed").await, ["u_two", "u_one"]);
    // ...a new display name is found, the old one is not...
    let (s, body) = app
        .patch(&one, serde_json::json!({ "display_name": "Quentin Blake" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(find(&app, &me, "blake").await, ["u_one"]);
    assert_eq!(find(&app, &me, "zed").await, ["u_two"]);
    // ...and so does a rename by the auth service's event, and a new profile.
    app.publish(&app.updated_event(&two, None, Some("Zed Deux")))
        .await;
    app.wait_for(&two, |p| p["display_name"] == "Zed Deux")
        .await;
    assert_eq!(find(&app, &me, "zed deux").await, ["u_two"]);
    let three = app.register("u_three", "Zed Three").await;
    assert_eq!(find(&app, &me, "zed").await, ["u_two", "u_three"]);

    // The other instance converges through the change feed.
    converges(&second, &me, "zed", &["u_two", "u_three"]).await;
    converges(&second, &me, "blake", &["u_one"]).await;
    converges(&second, &me, "zed deux", &["u_two"]).await;
    // Unfollowing and following, on the first instance, reorder the second one's results.
    let (s, _) = app
        .delete(&me, &format!("/users/me/following/{}", two.id))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    app.follow(&me, &three).await;
    assert_eq!(find(&app, &me, "zed").await, ["u_three", "u_two"]);
    converges(&second, &me, "zed", &["u_three", "u_two"]).await;
    second.stop().await;
    app.stop().await;
}
