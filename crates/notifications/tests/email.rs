//! Notification mails end to end: events on the bus, mails received by an SMTP sink
//! (`mail::testing`) and parsed — headers, the text and the HTML part — or read back from
//! the `.eml` outbox; the one-click unsubscribe; `user.deleted`. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bus::Envelope;
use common::{App, Msg, User, assert_problem};
use kit::db::Backend;
use mail::testing::{ParsedMail, SmtpSink};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

kit::backend_tests!(
    instant_mail_after_the_delay,
    several_due_go_in_one_mail,
    no_mail_when_read_withdrawn_unverified_off_or_online,
    daily_digest_at_local_eight,
    unsubscribe_link_turns_mail_off,
    outbox_files_without_smtp,
    user_deleted_removes_their_data,
);

/// The delay before an unread notification is mailed, in these tests (5 min in production).
const DELAY_MS: u64 = 1_500;
const PUBLIC_URL: &str = "https://colab.example";
/// Long enough for any mail due to arrive (delay + a few 100 ms polls).
const WAIT: Duration = Duration::from_secs(10);
/// How long "no mail" is watched for: longer than the delay plus two polls.
const QUIET: Duration = Duration::from_millis(2_500);

async fn start(backend: Backend, test: &str, sink_url: Option<&str>) -> Option<App> {
    let sink_url = sink_url.map(str::to_owned);
    App::start_with(backend, test, move |c| {
        c.smtp_url = sink_url;
        c.public_url = PUBLIC_URL.to_owned();
        c.email_delay_ms = DELAY_MS;
        c.email_poll_ms = 100;
    })
    .await
}

/// auth's `user.registered` for `user`.
fn registered(user: &User, display_name: &str, verified: bool) -> Envelope {
    Envelope::new(
        "auth",
        "user.registered",
        json!({
            "user_id": user.id, "username": user.username, "display_name": display_name,
            "email": email_of(user), "email_verified": verified,
            "created_at": "2026-12-03T10:00:00Z",
        }),
    )
}

fn email_of(user: &User) -> String {
    format!("{}@example.com", user.username)
}

/// `user` registered with a verified address and their username as display name.
async fn verified(app: &App, user: &User) {
    app.apply(&registered(user, &user.username, true)).await;
}

fn assert_mail_to(m: &ParsedMail, user: &User) {
    assert_eq!(m.envelope_to, vec![email_of(user)], "{}", m.raw);
    assert!(
        m.header("To").unwrap().contains(&email_of(user)),
        "{}",
        m.raw
    );
}

/// The mail's `List-Unsubscribe` token.
fn unsubscribe_token(m: &ParsedMail) -> String {
    let h = m.header("List-Unsubscribe").unwrap();
    let prefix = format!("<{PUBLIC_URL}/notifications/unsubscribe?token=");
    assert!(h.starts_with(&prefix) && h.ends_with('>'), "{h}");
    h[prefix.len()..h.len() - 1].to_owned()
}

async fn instant_mail_after_the_delay(backend: Backend) {
    let (sink, url) = SmtpSink::start().await;
    let Some(app) = start(backend, "instant_mail_after_the_delay", Some(&url)).await else {
        return;
    };
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    // The actor's display name and the preview are user-controlled: HTML in them must
    // arrive escaped, and the greeting must not use a display name.
    app.apply(&registered(&alice, r#"<b>Ali & "Co"</b>"#, true))
        .await;
    app.apply(&registered(&bob, "Bob <img src=x>", true)).await;
    let room = Uuid::now_v7();
    let mut msg = Msg::channel(room, 7, &alice).mention(&[&bob]);
    msg.preview = "<script>alert('hi')</script> & more".to_owned();
    let sent = Instant::now();
    app.apply(&msg.created()).await;
    let m = sink.next_message(WAIT).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(DELAY_MS),
        "mailed after {:?}, before the delay",
        sent.elapsed()
    );
    assert_mail_to(&m, &bob);
    assert!(m.header("From").unwrap().contains("no-reply@"), "{}", m.raw);
    assert_eq!(
        m.header("Subject"),
        Some("1 new notification on IntelliColab")
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    unsubscribe_token(&m);
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{}",
        m.raw
    );
    let link = format!(
        "{PUBLIC_URL}/#/rooms/{room}?around=7&msg={}",
        msg.message_id
    );
    let text = m.text();
    assert!(text.starts_with("Hello @bob,\n"), "{text}");
    assert!(
        text.contains(r#"<b>Ali & "Co"</b> (@alice) mentioned you in #general"#),
        "{text}"
    );
    assert!(
        text.contains("\"<script>alert('hi')</script> & more\""),
        "{text}"
    );
    assert!(text.contains(&link), "{text}");
    let html = m.html();
    assert!(html.contains("<p>Hello @bob,</p>"), "{html}");
    assert!(
        html.contains(
            "&lt;b&gt;Ali &amp; &quot;Co&quot;&lt;/b&gt; (@alice) mentioned you in #general"
        ),
        "{html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(&#39;hi&#39;)&lt;/script&gt; &amp; more"),
        "{html}"
    );
    assert!(html.contains(&link.replace('&', "&amp;")), "{html}");
    for raw in ["<script>", "<b>Ali", "<img", "Bob &lt;img"] {
        assert!(!html.contains(raw), "{raw} in {html}");
    }
    assert!(
        !text.contains("Bob <img"),
        "no display name greeting: {text}"
    );
    // Mailing does not read it, and it is mailed once.
    assert_eq!(app.unread(&bob).await, 1);
    assert!(sink.try_next_message(QUIET).await.is_none());
    app.stop().await;
}

async fn several_due_go_in_one_mail(backend: Backend) {
    let (sink, url) = SmtpSink::start().await;
    let Some(app) = start(backend, "several_due_go_in_one_mail", Some(&url)).await else {
        return;
    };
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    verified(&app, &alice).await;
    verified(&app, &bob).await;
    let room = Uuid::now_v7();
    let mut events = Vec::new();
    let mut ids = Vec::new();
    for seq in 1..=3 {
        let m = Msg::channel(room, seq, &alice).mention(&[&bob]);
        ids.push(m.message_id);
        events.push(m.created());
    }
    // A DM too: another room, another kind, same mail.
    let dm = Msg::dm(Uuid::now_v7(), 1, &alice, &bob);
    events.push(dm.created());
    ids.push(dm.message_id);
    // A burst, as a conversation is: all well within a quarter of the delay.
    for e in &events {
        app.bus.publish(e).await.unwrap();
    }
    for e in &events {
        app.wait_processed(e).await;
    }
    let m = sink.next_message(WAIT).await;
    assert_mail_to(&m, &bob);
    assert_eq!(
        m.header("Subject"),
        Some("4 new notifications on IntelliColab")
    );
    for id in &ids {
        assert!(m.text().contains(&format!("msg={id}")), "{}", m.text());
        assert!(m.html().contains(&format!("msg={id}")), "{}", m.html());
    }
    assert!(
        m.text().contains("@alice sent you a direct message"),
        "{}",
        m.text()
    );
    assert!(sink.try_next_message(QUIET).await.is_none());
    app.stop().await;
}

async fn no_mail_when_read_withdrawn_unverified_off_or_online(backend: Backend) {
    let (sink, url) = SmtpSink::start().await;
    let Some(app) = start(
        backend,
        "no_mail_when_read_withdrawn_unverified_off_or_online",
        Some(&url),
    )
    .await
    else {
        return;
    };
    let alice = app.user("alice");
    let (reader, gone, unverified, off, online, control) = (
        app.user("reader"),
        app.user("gone"),
        app.user("unverified"),
        app.user("off"),
        app.user("online"),
        app.user("control"),
    );
    for u in [&alice, &reader, &gone, &off, &online, &control] {
        verified(&app, u).await;
    }
    app.apply(&registered(&unverified, "unverified", false))
        .await;
    let (s, _) = app
        .put(&off, "/notifications/preferences", json!({"email": "off"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    app.chat.online.lock().unwrap().insert(online.id);
    let room = Uuid::now_v7();
    app.apply(
        &Msg::channel(room, 1, &alice)
            .mention(&[&reader, &unverified, &off, &online, &control])
            .created(),
    )
    .await;
    let withdrawn = Msg::channel(room, 2, &alice).mention(&[&gone]);
    app.apply(&withdrawn.created()).await;
    // Read and withdrawn within the delay.
    let (s, _) = app
        .post(&reader, "/notifications/read", json!({"all": true}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    app.apply(&withdrawn.deleted(3)).await;
    let m = sink.next_message(WAIT).await;
    assert_mail_to(&m, &control);
    assert!(sink.try_next_message(QUIET).await.is_none());
    // Still unread for those not mailed: the inbox has them.
    for u in [&unverified, &off, &online] {
        assert_eq!(app.unread(u).await, 1, "{}", u.username);
    }
    // A verification later does not mail what was already passed over.
    verified(&app, &unverified).await;
    assert!(sink.try_next_message(QUIET).await.is_none());
    app.stop().await;
}

/// 2027-03-13 and 2027-03-14 in New York: EST (UTC−5), then EDT (UTC−4) from 02:00 on
/// the 14th. 08:00 local is 13:00 UTC on the 13th and 12:00 UTC on the 14th. Dates in the
/// future: the instant round (same clock, delay 0) would mail everything by then, were
/// `daily` users not left to the digest.
async fn daily_digest_at_local_eight(backend: Backend) {
    let (sink, url) = SmtpSink::start().await;
    let utc = |d: u32, h: u32, m: u32| -> i64 {
        // 2027-03-01T00:00:00Z = 1803859200.
        (1_803_859_200 + i64::from(d - 1) * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60) * 1000
    };
    let now = Arc::new(AtomicI64::new(utc(13, 12, 59)));
    let clock_now = now.clone();
    let Some(app) = App::start_with(backend, "daily_digest_at_local_eight", move |c| {
        c.smtp_url = Some(url);
        c.public_url = PUBLIC_URL.to_owned();
        c.email_delay_ms = 0;
        c.email_poll_ms = 100;
        c.email_clock =
            notifications::email::worker::Clock::from_fn(move || clock_now.load(Ordering::SeqCst));
    })
    .await
    else {
        return;
    };
    let (alice, dora) = (app.user("alice"), app.user("dora"));
    verified(&app, &alice).await;
    verified(&app, &dora).await;
    let (s, body) = app
        .put(
            &dora,
            "/notifications/preferences",
            json!({"email": "daily", "timezone": "America/New_York", "previews": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let room = Uuid::now_v7();
    let first: Vec<Msg> = (1..=2)
        .map(|seq| Msg::channel(room, seq, &alice).mention(&[&dora]))
        .collect();
    for m in &first {
        app.apply(&m.created()).await;
    }
    // 07:59 EST: no digest yet, and no instant mail for a `daily` user (delay 0).
    assert!(
        sink.try_next_message(Duration::from_millis(800))
            .await
            .is_none()
    );
    now.store(utc(13, 13, 0), Ordering::SeqCst);
    let m = sink.next_message(WAIT).await;
    assert_mail_to(&m, &dora);
    assert_eq!(
        m.header("Subject"),
        Some("Your IntelliColab digest: 2 unread notifications")
    );
    for msg in &first {
        assert!(
            m.text().contains(&msg.message_id.to_string()),
            "{}",
            m.text()
        );
    }
    // previews: false — no message text.
    assert!(!m.text().contains("message 1"), "{}", m.text());
    unsubscribe_token(&m);
    // Later that day: nothing more, even with a new notification.
    let second = Msg::channel(room, 3, &alice).mention(&[&dora]);
    app.apply(&second.created()).await;
    now.store(utc(13, 20, 0), Ordering::SeqCst);
    assert!(
        sink.try_next_message(Duration::from_millis(800))
            .await
            .is_none()
    );
    // 07:59 EDT on the 14th (11:59 UTC): not yet; at 13:00 UTC it would be an hour late.
    now.store(utc(14, 11, 59), Ordering::SeqCst);
    assert!(
        sink.try_next_message(Duration::from_millis(800))
            .await
            .is_none()
    );
    now.store(utc(14, 12, 0), Ordering::SeqCst);
    let m = sink.next_message(WAIT).await;
    assert_eq!(
        m.header("Subject"),
        Some("Your IntelliColab digest: 1 unread notification")
    );
    assert!(
        m.text().contains(&second.message_id.to_string()),
        "{}",
        m.text()
    );
    assert!(
        !m.text().contains(&first[0].message_id.to_string()),
        "{}",
        m.text()
    );
    let day: Option<String> =
        sqlx::query_scalar("SELECT digest_on FROM preferences WHERE user_id = $1")
            .bind(dora.id.to_string())
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(day.as_deref(), Some("2027-03-14"));
    assert!(
        sink.try_next_message(Duration::from_millis(800))
            .await
            .is_none()
    );
    app.stop().await;
}

async fn unsubscribe_link_turns_mail_off(backend: Backend) {
    let (sink, url) = SmtpSink::start().await;
    let Some(app) = start(backend, "unsubscribe_link_turns_mail_off", Some(&url)).await else {
        return;
    };
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    verified(&app, &alice).await;
    verified(&app, &bob).await;
    let room = Uuid::now_v7();
    app.apply(&Msg::channel(room, 1, &alice).mention(&[&bob]).created())
        .await;
    let m = sink.next_message(WAIT).await;
    let token = unsubscribe_token(&m);
    let unsubscribe = |token: String| {
        let app = &app;
        async move {
            // As a mail client does (RFC 8058): no login, the form body.
            let res = app
                .http
                .post(format!(
                    "{}/notifications/unsubscribe?token={token}",
                    app.url
                ))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("List-Unsubscribe=One-Click")
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body = res.json::<serde_json::Value>().await.unwrap_or_default();
            (status, body)
        }
    };
    // Forgeries: another user's id with bob's tag, a changed tag, garbage, nothing.
    let (_, tag) = token.split_once('.').unwrap();
    let mut flipped = token.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [
        format!("{}.{tag}", alice.id),
        flipped,
        "nonsense".to_owned(),
        String::new(),
    ] {
        let (s, body) = unsubscribe(bad.clone()).await;
        assert_problem(s, &body, StatusCode::BAD_REQUEST, "invalid_token");
    }
    let (_, prefs) = app.get(&bob, "/notifications/preferences").await;
    assert_eq!(prefs["email"], "instant", "a forged token changed nothing");
    for _ in 0..2 {
        let (s, body) = unsubscribe(token.clone()).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
        let (_, prefs) = app.get(&bob, "/notifications/preferences").await;
        assert_eq!(prefs["email"], "off");
        assert_eq!(prefs["web_push"], true, "only email changes");
    }
    app.apply(&Msg::channel(room, 2, &alice).mention(&[&bob]).created())
        .await;
    assert!(sink.try_next_message(QUIET).await.is_none());
    // The route is in the service's OpenAPI document, without bearer security.
    let (_, doc) = app.send(Method::GET, None, "/openapi.json", None).await;
    let op = &doc["paths"]["/notifications/unsubscribe"]["post"];
    assert_eq!(op["security"], json!([]), "{op}");
    app.stop().await;
}

async fn outbox_files_without_smtp(backend: Backend) {
    let Some(app) = start(backend, "outbox_files_without_smtp", None).await else {
        return;
    };
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    verified(&app, &alice).await;
    verified(&app, &bob).await;
    let msg = Msg::channel(Uuid::now_v7(), 1, &alice).mention(&[&bob]);
    app.apply(&msg.created()).await;
    let outbox = app.data_dir().join("outbox");
    let deadline = Instant::now() + WAIT;
    let file = loop {
        let files: Vec<_> = std::fs::read_dir(&outbox)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        if let Some(f) = files.first() {
            assert_eq!(files.len(), 1, "{files:?}");
            break f.clone();
        }
        assert!(Instant::now() < deadline, "no .eml in {}", outbox.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(file.extension().unwrap(), "eml");
    let m = mail::testing::parse(&std::fs::read_to_string(&file).unwrap());
    assert!(m.header("To").unwrap().contains("bob@example.com"));
    assert_eq!(
        m.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    unsubscribe_token(&m);
    assert!(m.text().contains(&msg.message_id.to_string()));
    assert!(m.html().contains(&msg.message_id.to_string()));
    app.stop().await;
}

async fn count(app: &App, table: &str, user: &User) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {table} WHERE user_id = $1"
    )))
    .bind(user.id.to_string())
    .fetch_one(app.db.pool())
    .await
    .unwrap()
}

async fn user_deleted_removes_their_data(backend: Backend) {
    let (sink, url) = SmtpSink::start().await;
    let Some(app) = start(backend, "user_deleted_removes_their_data", Some(&url)).await else {
        return;
    };
    let (alice, bob, carol) = (app.user("alice"), app.user("bob"), app.user("carol"));
    for u in [&alice, &bob, &carol] {
        verified(&app, u).await;
    }
    let room = Uuid::now_v7();
    app.chat.join(room, &bob, "channel");
    let (s, body) = app
        .put(
            &bob,
            &format!("/notifications/rooms/{room}"),
            json!({"level": "all"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = app
        .put(
            &bob,
            "/notifications/preferences",
            json!({"previews": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    sqlx::query(
        "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, created_at)
         VALUES ($1, $2, 'https://push.example/bob', 'k', 'a', 0)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(bob.id.to_string())
    .execute(app.db.pool())
    .await
    .unwrap();
    app.apply(
        &Msg::channel(room, 1, &alice)
            .mention(&[&bob, &carol])
            .created(),
    )
    .await;
    assert_eq!(app.unread(&bob).await, 1);
    let tables = [
        "notifications",
        "preferences",
        "room_settings",
        "push_subscriptions",
        "recipients",
    ];
    for t in tables {
        assert_eq!(count(&app, t, &bob).await, 1, "{t} before");
    }
    let deleted = || Envelope::new("auth", "user.deleted", json!({ "user_id": bob.id }));
    app.apply(&deleted()).await;
    for t in tables {
        assert_eq!(count(&app, t, &bob).await, 0, "{t} after");
    }
    // Again (another event): nothing left to delete, no error.
    app.apply(&deleted()).await;
    assert_eq!(app.inbox(&bob).await.len(), 0);
    // Others keep theirs; only carol is mailed.
    assert_eq!(count(&app, "notifications", &carol).await, 1);
    let m = sink.next_message(WAIT).await;
    assert_mail_to(&m, &carol);
    assert!(sink.try_next_message(QUIET).await.is_none());
    app.stop().await;
}
