//! `intellicolab replay-events --service <name> --since <time>` through the real binary
//! (issue 21), against the database of a running deployment — one process per service
//! and a private Redis, on SQLite files and on PostgreSQL (`TEST_DATABASE_URL`): the
//! service's events since then are marked unpublished, its running relay sends them
//! again, the consumers receive them again and drop them (no second effect). Bad
//! arguments end with a non-zero exit and a message naming the problem.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kit::db::Backend;
use kit::testing::TestDb;
use serde_json::{Value, json};
use support::cluster::PrivateRedis;
use support::{Account, Client, Ports, Proc, wait_ready};

kit::backend_tests!(
    replayed_user_events_are_redelivered_without_a_second_effect,
    replayed_auth_events_are_redelivered_without_a_second_effect,
);

/// Four processes, one per service, and the environment they (and the replay command)
/// were started with.
struct System {
    ports: Ports,
    env: Vec<(&'static str, String)>,
    procs: Vec<Proc>,
    api: Client,
    _redis: PrivateRedis,
    _dir: tempfile::TempDir,
    _dbs: Vec<TestDb>,
}

impl System {
    async fn start(backend: Backend, test: &str) -> Option<System> {
        // Separate processes hear each other's events only through Redis.
        let redis = PrivateRedis::start(test)?;
        let mut dbs = Vec::new();
        for service in ["auth", "users", "chat"] {
            dbs.push(kit::testing::test_db(backend, &format!("{test}_{service}")).await?);
        }
        let dir = tempfile::tempdir().unwrap();
        let ports = Ports::new();
        let mut env = ports.env(dir.path());
        env.push(("INTELLICOLAB_REDIS_URL", redis.url()));
        // SQLite: one file per service in the data dir (no URL).
        for (var, db) in [
            "INTELLICOLAB_AUTH__DATABASE_URL",
            "INTELLICOLAB_USERS__DATABASE_URL",
            "INTELLICOLAB_CHAT__DATABASE_URL",
        ]
        .into_iter()
        .zip(&dbs)
        {
            if let Some(url) = &db.url {
                env.push((var, url.clone()));
            }
        }
        let start = |role: &str| Proc::start(dir.path(), role, &["serve", role], &env);
        let auth = start("auth");
        wait_ready(&format!("{}/readyz", ports.auth_url())).await;
        let procs = vec![
            auth,
            start("users"),
            start("chat"),
            start("notifications"),
            start("files"),
            start("gateway"),
        ];
        ports.wait_all_ready().await;
        Some(System {
            api: Client::new(&ports.gateway_url()),
            ports,
            env,
            procs,
            _redis: redis,
            _dir: dir,
            _dbs: dbs,
        })
    }

    /// Runs `intellicolab <args>` with the deployment's environment and waits for it.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_intellicolab"));
        for (key, _) in std::env::vars() {
            if key.starts_with("INTELLICOLAB_")
                || key.ends_with("DATABASE_URL")
                || key == "REDIS_URL"
            {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(Proc::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Registers `name` and waits (bounded) until the user service has its profile.
async fn user(api: &Client, name: &str) -> Account {
    let account = api.register(name).await;
    for _ in 0..250 {
        let (s, _, _) = api
            .call("GET", "/users/me", Some(&account.access), None)
            .await;
        if s == 200 {
            return account;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no profile for {name} within 5 s");
}

/// The sum of `metric`'s samples whose labels contain every one of `labels` in a
/// Prometheus text exposition.
fn sample(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// How many events of `kind` the consumer `consumer` (group or broadcast name) was
/// handed, at the process at `base`.
async fn consumed(base: &str, consumer: &str, kind: &str) -> f64 {
    sample(
        &metrics(base).await,
        "bus_events_consumed_total",
        &[
            &format!("consumer=\"{consumer}\""),
            &format!("type=\"{kind}\""),
        ],
    )
}

/// Polls `check` every 50 ms for at most `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for _ in 0..secs * 20 {
        match check().await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {secs} s: {last}");
}

async fn dm_send(api: &Client, room: &str, from: &Account, cmid: &str) -> (u16, Value) {
    let (s, b, _) = api
        .call(
            "POST",
            &format!("/chat/rooms/{room}/messages"),
            Some(&from.access),
            Some(json!({"body": cmid, "client_msg_id": cmid})),
        )
        .await;
    (s, b)
}

/// Follows and a block that was lifted again, all consumed; then the users service's
/// events are replayed: chat receives `user.blocked` and `user.unblocked` again, and the
/// DM stays open (a second effect of the replayed block would close it); follower counts
/// and block lists are unchanged.
async fn replayed_user_events_are_redelivered_without_a_second_effect(backend: Backend) {
    let test = "replayed_user_events_are_redelivered_without_a_second_effect";
    let Some(sys) = System::start(backend, test).await else {
        return;
    };
    let api = &sys.api;
    let since = kit::time::now_ms();
    let alice = user(api, "alice").await;
    let bob = user(api, "bob").await;
    let carol = user(api, "carol").await;
    let (s, dm, _) = api
        .call(
            "POST",
            "/chat/dms",
            Some(&alice.access),
            Some(json!({"user_id": bob.id})),
        )
        .await;
    assert_eq!(s, 201, "{dm}");
    let dm = dm["id"].as_str().unwrap().to_owned();
    for who in [&alice, &bob] {
        let (s, b, _) = api
            .call(
                "PUT",
                &format!("/users/me/following/{}", carol.id),
                Some(&who.access),
                None,
            )
            .await;
        assert_eq!(s, 204, "{b}");
    }
    // Alice blocks Bob; chat's copy of the block refuses the DM; she lifts it; the DM opens.
    let blocks = format!("/users/me/blocks/{}", bob.id);
    let (s, b, _) = api.call("PUT", &blocks, Some(&alice.access), None).await;
    assert_eq!(s, 204, "{b}");
    let (dm_ref, bob_ref) = (&dm, &bob);
    let mut n = 0;
    eventually(5, "chat applies the block", || {
        n += 1;
        let (dm, bob) = (dm_ref, bob_ref);
        let cmid = format!("while-blocked-{n}");
        async move {
            match dm_send(api, dm, bob, &cmid).await {
                (403, b) if b["code"] == "blocked" => Ok(()),
                (s, b) => Err(format!("{s} {b}")),
            }
        }
    })
    .await;
    let (s, b, _) = api.call("DELETE", &blocks, Some(&alice.access), None).await;
    assert_eq!(s, 204, "{b}");
    let mut n = 0;
    eventually(5, "chat applies the unblock", || {
        n += 1;
        let (dm, bob) = (dm_ref, bob_ref);
        let cmid = format!("after-unblock-{n}");
        async move {
            match dm_send(api, dm, bob, &cmid).await {
                (201, _) => Ok(()),
                (s, b) => Err(format!("{s} {b}")),
            }
        }
    })
    .await;
    let chat = sys.ports.chat_url();
    let blocked_before = consumed(&chat, "chat", "user.blocked").await;
    let unblocked_before = consumed(&chat, "chat", "user.unblocked").await;
    assert_eq!(
        (blocked_before, unblocked_before),
        (1.0, 1.0),
        "chat was handed each block event once so far"
    );

    let out = sys.run(&[
        "replay-events",
        "--service",
        "users",
        "--since",
        &kit::time::rfc3339(since),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay-events failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 2 follows, the block, the unblock (at least: the block also removed no follows here).
    let marked: u64 = stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in: {stdout}"));
    assert!(marked >= 4, "{stdout}");
    assert!(stdout.contains("marked for re-publication"), "{stdout}");
    println!("replay-events: {}", stdout.trim());

    // The running relay sends them again and chat is handed them again...
    eventually(10, "chat is handed the replayed block events", || {
        let chat = chat.clone();
        async move {
            let got = (
                consumed(&chat, "chat", "user.blocked").await,
                consumed(&chat, "chat", "user.unblocked").await,
            );
            if got.0 > blocked_before && got.1 > unblocked_before {
                Ok(())
            } else {
                Err(format!("consumed (blocked, unblocked) = {got:?}"))
            }
        }
    })
    .await;
    // ...and drops them: the block that was lifted stays lifted, both ways.
    for (i, from) in [&alice, &bob, &alice].into_iter().enumerate() {
        let (s, b) = dm_send(api, &dm, from, &format!("after-replay-{i}")).await;
        assert_eq!(
            s,
            201,
            "a replayed block took effect again: {b}\n{}",
            sys.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Follows and blocks are the user service's own rows: unchanged.
    let (s, p, _) = api
        .call(
            "GET",
            &format!("/users/{}", carol.id),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (p["followers_count"].as_i64(), p["following_count"].as_i64()),
        (Some(2), Some(0)),
        "{p}"
    );
    let (s, page, _) = api
        .call("GET", "/users/me/blocks", Some(&alice.access), None)
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"], json!([]), "{page}");

    // Bad arguments: non-zero exit and a message that names the problem.
    let since_text = kit::time::rfc3339(since);
    for (args, expect) in [
        (
            vec![
                "replay-events",
                "--service",
                "nosuch",
                "--since",
                &since_text,
            ],
            "nosuch",
        ),
        (
            vec![
                "replay-events",
                "--service",
                "gateway",
                "--since",
                &since_text,
            ],
            "only auth, users, chat and notifications publish events",
        ),
        (
            vec![
                "replay-events",
                "--service",
                "users",
                "--since",
                "yesterday",
            ],
            "not epoch milliseconds or an RFC 3339 time",
        ),
        (
            vec![
                "replay-events",
                "--service",
                "users",
                "--since",
                "2026-13-45T99:00:00Z",
            ],
            "not epoch milliseconds or an RFC 3339 time",
        ),
        (vec!["replay-events", "--service", "users"], "--since"),
    ] {
        let out = sys.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?}: the message does not say {expect:?}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("marked for re-publication"),
            "{args:?} marked events"
        );
    }
}

/// Alice renames herself after registering; the auth service's events are replayed: the
/// user service is handed `user.registered` and `user.updated` again and her profile keeps
/// the newer name (a second effect of the replayed registration would bring the old one back).
async fn replayed_auth_events_are_redelivered_without_a_second_effect(backend: Backend) {
    let test = "replayed_auth_events_are_redelivered_without_a_second_effect";
    let Some(sys) = System::start(backend, test).await else {
        return;
    };
    let api = &sys.api;
    let since = kit::time::now_ms();
    let alice = user(api, "alice").await;
    let bob = user(api, "bob").await;
    let (s, b, _) = api
        .call(
            "PATCH",
            "/auth/me",
            Some(&alice.access),
            Some(json!({"display_name": "Alice Renamed"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let profile = format!("/users/{}", alice.id);
    let bob_ref = &bob;
    eventually(5, "the profile takes the new name", || {
        let profile = profile.clone();
        let bob = bob_ref;
        async move {
            let (s, p, _) = api.call("GET", &profile, Some(&bob.access), None).await;
            if s == 200 && p["display_name"] == "Alice Renamed" {
                Ok(())
            } else {
                Err(format!("{s} {p}"))
            }
        }
    })
    .await;
    let users = sys.ports.users_url();
    let before = (
        consumed(&users, "users", "user.registered").await,
        consumed(&users, "users", "user.updated").await,
    );
    // (The revocation broadcast reader counts under the same name: at least once each.)
    assert!(before.0 >= 2.0 && before.1 >= 1.0, "{before:?}");

    // Epoch milliseconds work as well as RFC 3339.
    let out = sys.run(&[
        "replay-events",
        "--service",
        "auth",
        "--since",
        &since.to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay-events failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("replay-events: {}", stdout.trim());

    eventually(10, "users is handed the replayed auth events", || {
        let users = users.clone();
        async move {
            let got = (
                consumed(&users, "users", "user.registered").await,
                consumed(&users, "users", "user.updated").await,
            );
            if got.0 >= before.0 + 2.0 && got.1 > before.1 {
                Ok(())
            } else {
                Err(format!("consumed (registered, updated) = {got:?}"))
            }
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, p, _) = api.call("GET", &profile, Some(&bob.access), None).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (p["username"].as_str(), p["display_name"].as_str()),
        (Some("alice"), Some("Alice Renamed")),
        "a replayed event took effect again: {p}"
    );
    // No second profile appeared (search by the name finds one Alice).
    let (s, page, _) = api
        .call("GET", "/users/search?q=alice", Some(&bob.access), None)
        .await;
    assert_eq!(s, 200, "{page}");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, [alice.id.as_str()], "{page}");
}
