//! Issue 21: domain events survive Redis losing its data. Real processes — `serve auth`,
//! `serve users`, `serve chat`, `serve gateway` — over fresh PostgreSQL databases and a
//! private `redis-server`, while clients register, rename themselves, follow, block, log
//! out and send chat messages, and Redis is (a) `FLUSHALL`-ed, (b) killed and restarted
//! empty, (c) restarted from an AOF that lacks its last second. Afterwards, with no
//! operator action:
//! - every account has its profile (`user.registered` → users) with the name it set
//!   afterwards (`user.updated` → users);
//! - every follow and block is applied once (counts and lists exact), and chat's copy of
//!   the blocks (`user.blocked` → chat) refuses the DM sends;
//! - every ended session is refused by the users and chat services themselves
//!   (`session.revoked` → their verifiers);
//! - every acknowledged chat message is stored once. (`chat.message.created` has no
//!   consumer today, so there is no delivery of it to count.)
//!
//! The time from Redis being back to every check passing is printed ("recovered in").
//! Skipped with a printed reason without `TEST_DATABASE_URL` / `TEST_REDIS_URL`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kit::db::Backend;
use kit::testing::TestDb;
use serde_json::{Value, json};
use support::cluster::PrivateRedis;
use support::{Account, Client, Proc, free_port, wait_ready};

/// How long every check may take to pass once Redis is back (the relay polls every
/// 500 ms; a consumer's reconnect backs off to at most 2 s).
const RECOVERY_BOUND: Duration = Duration::from_secs(30);
/// Accounts that follow, block and log out during the fault (set up before it).
const POOL: usize = 6;

/// Four processes, one per service, on their own PostgreSQL databases and `redis`.
struct System {
    procs: Vec<Proc>,
    auth_port: u16,
    users_port: u16,
    chat_port: u16,
    gateway_port: u16,
    _dir: tempfile::TempDir,
    _dbs: Vec<TestDb>,
}

impl System {
    async fn start(test: &str, redis: &PrivateRedis) -> Option<System> {
        let mut dbs = Vec::new();
        for service in ["auth", "users", "chat"] {
            dbs.push(kit::testing::test_db(Backend::Postgres, &format!("{test}_{service}")).await?);
        }
        let dir = tempfile::tempdir().unwrap();
        let (auth_port, users_port, chat_port, gateway_port, admin_port) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        let listen = |p: u16| format!("127.0.0.1:{p}");
        let unlimited = "1000000".to_owned();
        let env: Vec<(&'static str, String)> = vec![
            ("INTELLICOLAB_DATA_DIR", dir.path().display().to_string()),
            ("INTELLICOLAB_REDIS_URL", redis.url()),
            (
                "INTELLICOLAB_AUTH__DATABASE_URL",
                dbs[0].url.clone().unwrap(),
            ),
            (
                "INTELLICOLAB_USERS__DATABASE_URL",
                dbs[1].url.clone().unwrap(),
            ),
            (
                "INTELLICOLAB_CHAT__DATABASE_URL",
                dbs[2].url.clone().unwrap(),
            ),
            ("INTELLICOLAB_AUTH__LISTEN", listen(auth_port)),
            ("INTELLICOLAB_USERS__LISTEN", listen(users_port)),
            ("INTELLICOLAB_CHAT__LISTEN", listen(chat_port)),
            ("INTELLICOLAB_GATEWAY__LISTEN", listen(gateway_port)),
            ("INTELLICOLAB_GATEWAY__ADMIN_LISTEN", listen(admin_port)),
            ("INTELLICOLAB_AUTH_URL", url(auth_port)),
            ("INTELLICOLAB_USERS_URL", url(users_port)),
            ("INTELLICOLAB_GATEWAY__UPSTREAMS__AUTH", url(auth_port)),
            ("INTELLICOLAB_GATEWAY__UPSTREAMS__USERS", url(users_port)),
            ("INTELLICOLAB_GATEWAY__UPSTREAMS__CHAT", url(chat_port)),
            // Every client is 127.0.0.1: the limits would throttle the test's own load.
            (
                "INTELLICOLAB_GATEWAY__RATE_LIMITS__DEFAULT__RATE",
                unlimited.clone(),
            ),
            (
                "INTELLICOLAB_GATEWAY__RATE_LIMITS__DEFAULT__BURST",
                unlimited.clone(),
            ),
            (
                "INTELLICOLAB_GATEWAY__RATE_LIMITS__STRICT__RATE",
                unlimited.clone(),
            ),
            (
                "INTELLICOLAB_GATEWAY__RATE_LIMITS__STRICT__BURST",
                unlimited.clone(),
            ),
            ("INTELLICOLAB_CHAT__SEND_RATE_PER_SEC", unlimited.clone()),
            ("INTELLICOLAB_CHAT__SEND_BURST", unlimited),
            ("RUST_LOG", "info,sqlx=warn".to_owned()),
        ];
        let start = |name: &str| Proc::start(dir.path(), name, &["serve", name], &env);
        let auth = start("auth");
        // Users and chat load the JWKS and the revocation list from auth at start.
        wait_ready(&format!("{}/readyz", url(auth_port))).await;
        let procs = vec![auth, start("users"), start("chat"), start("gateway")];
        for p in [users_port, chat_port, gateway_port] {
            wait_ready(&format!("{}/readyz", url(p))).await;
        }
        Some(System {
            procs,
            auth_port,
            users_port,
            chat_port,
            gateway_port,
            _dir: dir,
            _dbs: dbs,
        })
    }

    fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let logs = p.logs();
            let all: Vec<&str> = logs.lines().collect();
            out.push_str(&format!("--- {} ---\n", p.log.display()));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// `call` until the answer is not a 5xx/429 (a dependency briefly away), at most ~10 s.
async fn call_retrying(
    api: &Client,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut last = (0, Value::Null);
    for _ in 0..200 {
        let (s, b, _) = api.call(method, path, token, body.clone()).await;
        if s < 500 && s != 429 {
            return (s, b);
        }
        last = (s, b);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{method} {path}: still {} after ~10 s: {}", last.0, last.1);
}

/// Registers `username`; after a 5xx it tries again, and if the first try had created
/// the account (409), logs in instead.
async fn register(api: &Client, username: &str) -> Account {
    let password = format!("Pw-{username}-long-enough-1");
    let body = json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "password": password,
    });
    let (s, b) = call_retrying(api, "POST", "/auth/register", None, Some(body)).await;
    let b = if s == 409 {
        let login = json!({"login": username, "password": password});
        let (s, b) = call_retrying(api, "POST", "/auth/login", None, Some(login)).await;
        assert_eq!(s, 200, "login {username}: {b}");
        b
    } else {
        assert_eq!(s, 201, "register {username}: {b}");
        b
    };
    Account {
        id: b["user"]["id"].as_str().unwrap().to_owned(),
        username: username.to_owned(),
        password,
        access: b["access_token"].as_str().unwrap().to_owned(),
        refresh: b["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// A pool member: a second session (logged out during the fault) and its DM with the hub.
#[derive(Clone)]
struct Member {
    account: Account,
    second_session: String,
    dm: String,
}

#[derive(Clone)]
struct Setup {
    /// Reads profiles (nobody blocks it).
    observer: Account,
    /// Blocked by every pool member during the fault.
    hub: Account,
    /// Followed by every pool member during the fault.
    star: Account,
    pool: Vec<Member>,
    /// A public room of the hub's where the workload sends.
    room: String,
}

/// What the workload did (only what was acknowledged).
#[derive(Default)]
struct Done {
    /// Accounts registered during the test, with the display name each set afterwards.
    accounts: Vec<(Account, String)>,
    /// Pool members that followed the star, blocked the hub and logged out.
    pool_done: usize,
    /// `client_msg_id`s of acknowledged messages in `room`.
    messages: Vec<String>,
}

async fn setup(api: &Client, tag: &str) -> Setup {
    let observer = register(api, &format!("{tag}_observer")).await;
    let hub = register(api, &format!("{tag}_hub")).await;
    let star = register(api, &format!("{tag}_star")).await;
    let mut accounts = Vec::new();
    for i in 0..POOL {
        accounts.push(register(api, &format!("{tag}_pool{i}")).await);
    }
    let everyone: Vec<&Account> = [&observer, &hub, &star]
        .into_iter()
        .chain(accounts.iter())
        .collect();
    // Profiles come from `user.registered` through Redis: wait for them (bounded).
    for a in &everyone {
        let mut ok = false;
        for _ in 0..300 {
            let (s, _, _) = api.call("GET", "/users/me", Some(&a.access), None).await;
            if s == 200 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "no profile for {} before the fault", a.username);
    }
    let (s, room, _) = api
        .call(
            "POST",
            "/chat/rooms",
            Some(&hub.access),
            Some(json!({"name": format!("{tag}-room"), "visibility": "public"})),
        )
        .await;
    assert_eq!(s, 201, "{room}");
    let room = room["id"].as_str().unwrap().to_owned();
    let mut pool = Vec::new();
    for account in accounts {
        let mut second = account.clone();
        api.login(&mut second).await;
        let (s, dm, _) = api
            .call(
                "POST",
                "/chat/dms",
                Some(&hub.access),
                Some(json!({"user_id": account.id})),
            )
            .await;
        assert_eq!(s, 201, "{dm}");
        pool.push(Member {
            account,
            second_session: second.access,
            dm: dm["id"].as_str().unwrap().to_owned(),
        });
    }
    Setup {
        observer,
        hub,
        star,
        pool,
        room,
    }
}

/// Three client loops, each against one service, so that a paused service stalls only its
/// own: registrations each followed by a rename (auth), the pool's follows, blocks and
/// logouts one member per 250 ms (users, then auth), chat messages (chat). Until `stop`,
/// and the pool loop until every member acted.
async fn workload(api: Client, s: Setup, tag: String, stop: Arc<AtomicBool>) -> Done {
    let accounts = {
        let (api, stop) = (api.clone(), stop.clone());
        tokio::spawn(async move {
            let mut out = Vec::new();
            // Bounded: `stop` comes within ~10 s; 200 rounds is far more than that.
            for round in 0..200 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let account = register(&api, &format!("{tag}_n{round}")).await;
                let name = format!("Renamed {round}");
                let (st, b) = call_retrying(
                    &api,
                    "PATCH",
                    "/auth/me",
                    Some(&account.access),
                    Some(json!({"display_name": name})),
                )
                .await;
                assert_eq!(st, 200, "{b}");
                out.push((account, name));
            }
            out
        })
    };
    let pool = {
        let (api, s) = (api.clone(), s.clone());
        tokio::spawn(async move {
            for m in &s.pool {
                let token = Some(m.account.access.as_str());
                let (st, b) = call_retrying(
                    &api,
                    "PUT",
                    &format!("/users/me/following/{}", s.star.id),
                    token,
                    None,
                )
                .await;
                assert_eq!(st, 204, "follow: {b}");
                let (st, b) = call_retrying(
                    &api,
                    "PUT",
                    &format!("/users/me/blocks/{}", s.hub.id),
                    token,
                    None,
                )
                .await;
                assert_eq!(st, 204, "block: {b}");
                let (st, b) =
                    call_retrying(&api, "POST", "/auth/logout", Some(&m.second_session), None)
                        .await;
                assert_eq!(st, 204, "logout: {b}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            s.pool.len()
        })
    };
    let messages = tokio::spawn(async move {
        let mut out = Vec::new();
        for round in 0..2000 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let cmid = format!("m{round}");
            let (st, b) = call_retrying(
                &api,
                "POST",
                &format!("/chat/rooms/{}/messages", s.room),
                Some(&s.hub.access),
                Some(json!({"body": cmid, "client_msg_id": cmid})),
            )
            .await;
            assert!(st == 201 || st == 200, "send: {st} {b}");
            out.push(cmid);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        out
    });
    Done {
        accounts: accounts.await.unwrap(),
        pool_done: pool.await.unwrap(),
        messages: messages.await.unwrap(),
    }
}

/// SIGSTOP / SIGCONT: a consumer that is busy (or paused by its host) while Redis loses
/// data is exactly the one whose unread events are lost without a re-publication.
fn signal(proc: &Proc, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(proc.child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Every check of the module docs; the first failures found (empty: all hold).
async fn problems(
    api: &Client,
    sys: &System,
    s: &Setup,
    done: &Done,
    probe: &mut u64,
) -> Vec<String> {
    let mut out = Vec::new();
    let obs = Some(s.observer.access.as_str());
    for (a, name) in &done.accounts {
        let (st, p, _) = api
            .call("GET", &format!("/users/{}", a.id), obs, None)
            .await;
        if st != 200 || p["username"] != a.username.as_str() || p["display_name"] != name.as_str() {
            out.push(format!("profile of {}: {st} {p}", a.username));
        }
    }
    let pool = &s.pool[..done.pool_done];
    // Follows: exact counts both ways, and the list holds each follower once.
    let (st, p, _) = api
        .call("GET", &format!("/users/{}", s.star.id), obs, None)
        .await;
    if st != 200 || p["followers_count"] != pool.len() {
        out.push(format!(
            "star followers_count (want {}): {st} {p}",
            pool.len()
        ));
    }
    let (st, page, _) = api
        .call(
            "GET",
            &format!("/users/{}/followers?limit=100", s.star.id),
            obs,
            None,
        )
        .await;
    let mut followers: Vec<String> = page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    followers.sort();
    let mut want: Vec<String> = pool.iter().map(|m| m.account.id.clone()).collect();
    want.sort();
    if st != 200 || followers != want {
        out.push(format!(
            "star's followers: {st} {followers:?}, want {want:?}"
        ));
    }
    for m in pool {
        let (st, p, _) = api
            .call("GET", &format!("/users/{}", m.account.id), obs, None)
            .await;
        if st != 200 || p["following_count"] != 1 {
            out.push(format!(
                "{} following_count (want 1): {st} {p}",
                m.account.username
            ));
        }
        // Blocks: exactly the hub, once.
        let (st, page, _) = api
            .call(
                "GET",
                "/users/me/blocks?limit=100",
                Some(&m.account.access),
                None,
            )
            .await;
        let ids: Vec<&str> = page["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|p| p["id"].as_str()).collect())
            .unwrap_or_default();
        if st != 200 || ids != [s.hub.id.as_str()] {
            out.push(format!("{} blocks: {st} {page}", m.account.username));
        }
        // Chat's copy of the block (`user.blocked` consumed): the DM refuses the hub's send.
        *probe += 1;
        let cmid = format!("probe{probe}");
        let (st, b, _) = api
            .call(
                "POST",
                &format!("/chat/rooms/{}/messages", m.dm),
                Some(&s.hub.access),
                Some(json!({"body": cmid, "client_msg_id": cmid})),
            )
            .await;
        if st != 403 || b["code"] != "blocked" {
            out.push(format!(
                "DM hub→{} not blocked in chat: {st} {b}",
                m.account.username
            ));
        }
        // `session.revoked` reached the services' own verifiers (not only the gateway's).
        for (service, url) in [
            (
                "users",
                format!("http://127.0.0.1:{}/users/me", sys.users_port),
            ),
            (
                "chat",
                format!("http://127.0.0.1:{}/chat/rooms", sys.chat_port),
            ),
        ] {
            let res = api
                .http
                .get(&url)
                .bearer_auth(&m.second_session)
                .send()
                .await
                .unwrap();
            if res.status().as_u16() != 401 {
                out.push(format!(
                    "{service} still accepts {}'s ended session: {}",
                    m.account.username,
                    res.status()
                ));
            }
        }
    }
    // Messages: each acknowledged one stored once, nothing else.
    let (st, page, _) = api
        .call(
            "GET",
            &format!("/chat/rooms/{}/messages?limit=100", s.room),
            Some(&s.hub.access),
            None,
        )
        .await;
    let mut stored: HashMap<String, usize> = HashMap::new();
    for m in page["items"].as_array().into_iter().flatten() {
        *stored
            .entry(m["client_msg_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    let acked: HashSet<&String> = done.messages.iter().collect();
    if st != 200 || stored.len() != acked.len() || acked.iter().any(|c| stored.get(*c) != Some(&1))
    {
        out.push(format!(
            "messages: {st} stored {stored:?}, acked {:?}",
            done.messages
        ));
    }
    out
}

/// The sum of `metric`'s samples carrying `label` in a Prometheus text exposition.
fn counter(text: &str, metric: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `FLUSHALL`: every key, stream and group gone while Redis stays up.
    Flushall,
    /// kill -9, down ~1 s, back empty (no persistence).
    RestartEmpty,
    /// AOF persistence, restarted from a copy taken 1 s before: the last second of
    /// writes (events, progress markers, group positions) is gone.
    AofTail,
}

async fn case(test: &str, tag: &str, fault: Fault) {
    let redis = match fault {
        Fault::AofTail => PrivateRedis::start_aof(test),
        _ => PrivateRedis::start(test),
    };
    let Some(mut redis) = redis else {
        return;
    };
    let Some(sys) = System::start(test, &redis).await else {
        return;
    };
    let case_started = Instant::now();
    let api = Client::new(&format!("http://127.0.0.1:{}", sys.gateway_port));
    let s = setup(&api, tag).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(workload(
        api.clone(),
        s.clone(),
        tag.to_owned(),
        stop.clone(),
    ));
    // procs: [auth, users, chat, gateway]. The consumers fall behind before the loss, so
    // Redis holds events nobody has read yet: chat stops reading the users service's
    // events (blocks) and auth's (revocations) at 300 ms, users stops reading auth's
    // (registrations, renames) at 800 ms; the loss comes at 1300 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The AOF case loses everything written after this copy (~1 s of writes).
    let checkpoint = matches!(fault, Fault::AofTail)
        .then(|| tokio::task::block_in_place(|| redis.aof_checkpoint()));
    signal(&sys.procs[2], "STOP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&sys.procs[1], "STOP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The redis-server calls block (a few ms; a start up to 5 s): off the async workers.
    match fault {
        Fault::Flushall => tokio::task::block_in_place(|| redis.flushall()),
        Fault::RestartEmpty => {
            tokio::task::block_in_place(|| redis.kill());
            tokio::time::sleep(Duration::from_millis(1000)).await;
            tokio::task::block_in_place(|| redis.restart_empty());
        }
        Fault::AofTail => {
            let checkpoint = checkpoint.unwrap();
            tokio::task::block_in_place(|| redis.restart_from(&checkpoint));
        }
    }
    let back = Instant::now();
    signal(&sys.procs[1], "CONT");
    signal(&sys.procs[2], "CONT");
    // Traffic goes on after the loss too (new events on the emptied streams).
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    let done = load.await.unwrap();
    let last_write = Instant::now();
    assert_eq!(done.pool_done, POOL, "the workload ran too few rounds");
    let mut probe = 0;
    let mut last = Vec::new();
    while back.elapsed() < RECOVERY_BOUND {
        last = problems(&api, &sys, &s, &done, &mut probe).await;
        if last.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last.is_empty(),
        "{test}: not recovered {RECOVERY_BOUND:?} after Redis came back: {:#?}\n{}",
        &last[..last.len().min(10)],
        sys.logs_tail(30)
    );
    // The producers saw the loss and re-published (the alerting counters moved).
    let mut counters = Vec::new();
    for (service, port) in [
        ("auth", sys.auth_port),
        ("users", sys.users_port),
        ("chat", sys.chat_port),
    ] {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let label = format!("service=\"{service}\"");
        counters.push((
            service,
            counter(&text, "bus_redis_data_loss_detected_total", &label),
            counter(&text, "bus_events_replayed_total", &label),
        ));
    }
    println!("{test}: (service, losses detected, events re-published): {counters:?}");
    assert!(
        counters[0].1 >= 1.0,
        "auth's relay did not detect the loss: {counters:?}"
    );
    println!(
        "{test} ({fault:?}): recovered in {:?} after Redis was back ({:?} after the last write); \
         {} registrations+renames, {} follows/blocks/logouts, {} messages; case took {:?}",
        back.elapsed(),
        last_write.elapsed(),
        done.accounts.len(),
        done.pool_done,
        done.messages.len(),
        case_started.elapsed()
    );
    assert!(
        case_started.elapsed() < Duration::from_secs(60),
        "the case must stay under 60 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_flushall() {
    case("events_survive_a_flushall", "fl", Fault::Flushall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_restart_without_persistence() {
    case(
        "events_survive_a_restart_without_persistence",
        "re",
        Fault::RestartEmpty,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_an_aof_missing_its_last_second() {
    case(
        "events_survive_an_aof_missing_its_last_second",
        "ao",
        Fault::AofTail,
    )
    .await;
}
