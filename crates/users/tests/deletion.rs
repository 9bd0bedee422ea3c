//! Auth's `user.deleted` (API.md "Auth additions — v1.1", `DELETE /auth/me`): the
//! profile goes (a tombstone no later identity event revives), follows and blocks go
//! both ways with the counters of the other side, and each removed block is announced
//! as `user.unblocked` (chat and notifications keep copies). On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use bus::Envelope;
use common::{App, User, assert_problem};
use kit::db::Backend;
use reqwest::StatusCode;
use serde_json::json;

kit::backend_tests!(
    a_deleted_account_loses_profile_and_edges,
    deletion_before_registration_stays_deleted,
);

fn deleted_event(user: &User) -> Envelope {
    Envelope::new("auth", "user.deleted", json!({ "user_id": user.id }))
}

/// Waits until `viewer` gets 404 for `of`'s profile.
async fn wait_gone(app: &App, viewer: &User, of: &User) {
    for _ in 0..500 {
        let (s, body) = app.get(viewer, &format!("/users/{}", of.id)).await;
        if s == StatusCode::NOT_FOUND {
            assert_problem(s, &body, StatusCode::NOT_FOUND, "user_not_found");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the profile of {} never went", of.username);
}

async fn a_deleted_account_loses_profile_and_edges(backend: Backend) {
    let Some(app) = App::start(backend, "deleted_account").await else {
        return;
    };
    let ann = app.register("ann", "Ann").await;
    let bob = app.register("bob", "Bob").await;
    let cat = app.register("cat", "Cat").await;
    let dan = app.register("dan", "Dan").await;
    app.follow(&bob, &ann).await;
    app.follow(&ann, &cat).await;
    app.follow(&ann, &bob).await;
    let (s, _) = app.put(&dan, &format!("/users/me/blocks/{}", ann.id)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.put(&ann, &format!("/users/me/blocks/{}", cat.id)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.profile(&bob, &bob).await["following_count"], 1);

    let deleted = deleted_event(&ann);
    app.publish(&deleted).await;
    wait_gone(&app, &bob, &ann).await;
    // The other sides' counters and lists.
    let bob_profile = app.profile(&bob, &bob).await;
    assert_eq!(
        (
            bob_profile["followers_count"].as_i64(),
            bob_profile["following_count"].as_i64()
        ),
        (Some(0), Some(0)),
        "{bob_profile}"
    );
    assert_eq!(app.profile(&cat, &cat).await["followers_count"], 0);
    let (_, blocks) = app.get(&dan, "/users/me/blocks").await;
    assert_eq!(blocks["items"], json!([]), "{blocks}");
    let (_, found) = app.get(&bob, "/users/search?q=ann").await;
    assert!(
        found["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["username"] != "ann"),
        "{found}"
    );
    // Each removed block is announced, once.
    app.wait_published("user.unblocked", |d| {
        d["blocker_id"] == dan.id() && d["blocked_id"] == ann.id()
    })
    .await;
    app.wait_published("user.unblocked", |d| {
        d["blocker_id"] == ann.id() && d["blocked_id"] == cat.id()
    })
    .await;
    // A redelivery changes nothing; a late update does not bring the profile back.
    app.publish(&deleted).await;
    app.publish(&app.updated_event(&ann, Some("ann"), Some("Ann again")))
        .await;
    app.wait_count("user.unblocked", 2).await;
    let (s, _) = app.get(&bob, &format!("/users/{}", ann.id)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Following the deleted account is refused like any unknown user.
    let (s, _) = app
        .put(&bob, &format!("/users/me/following/{}", ann.id))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn deletion_before_registration_stays_deleted(backend: Backend) {
    let Some(app) = App::start(backend, "deleted_first").await else {
        return;
    };
    let eve = app.register("eve", "Eve").await;
    let fay = app.account("fay");
    app.publish(&deleted_event(&fay)).await;
    app.publish(&app.registered_event(&fay, Some("Fay"), "2026-01-02T03:04:05.678Z"))
        .await;
    // The registration is consumed after the deletion (one consumer, in order): wait for
    // a later event of another account to be sure both were applied.
    let gil = app.register("gil", "Gil").await;
    let _ = gil;
    let (s, _) = app.get(&eve, &format!("/users/{}", fay.id)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
}
