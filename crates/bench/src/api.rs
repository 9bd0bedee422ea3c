//! Setup through the public API (API.md): accounts, rooms, memberships.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};

pub const PASSWORD: &str = "bench-Horse-Battery-42";

#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    pub token: String,
    /// The registered user's id (`user.id` of the register answer).
    pub user_id: String,
}

pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()?)
}

async fn expect_json(resp: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "{what}: HTTP {status}: {}",
        text.chars().take(300).collect::<String>()
    );
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON"))
}

/// A short random tag so accounts of different runs never collide.
pub fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_owned()
}

pub async fn register(
    http: &reqwest::Client,
    auth: &str,
    username: &str,
) -> anyhow::Result<Account> {
    let resp = http
        .post(format!("{auth}/auth/register"))
        .json(&json!({
            "username": username,
            "email": format!("{username}@bench.invalid"),
            "password": PASSWORD,
        }))
        .send()
        .await?;
    let v = expect_json(resp, "register").await?;
    let token = v["access_token"]
        .as_str()
        .context("register: no access_token")?
        .to_owned();
    let user_id = v["user"]["id"].as_str().unwrap_or_default().to_owned();
    Ok(Account {
        username: username.to_owned(),
        token,
        user_id,
    })
}

/// Registers `n` accounts `<prefix><i>` with `concurrency` requests in flight.
pub async fn register_many(
    http: &reqwest::Client,
    auth: &str,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Account>> {
    let bar = crate::progress::counted("registering accounts", n as u64);
    let http = Arc::new(http.clone());
    let results: Vec<anyhow::Result<Account>> = futures::stream::iter(0..n)
        .map(|i| {
            let (http, bar) = (http.clone(), bar.clone());
            let username = format!("{prefix}{i}");
            let auth = auth.to_owned();
            async move {
                let r = register(&http, &auth, &username).await;
                bar.inc(1);
                r
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    results.into_iter().collect()
}

/// Waits until the user service knows the account (profiles arrive by event).
pub async fn wait_profile(http: &reqwest::Client, users: &str, token: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let r = http
            .get(format!("{users}/users/me"))
            .bearer_auth(token)
            .send()
            .await?;
        if r.status().is_success() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "profile did not appear within 30 s (last status {})",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn create_room(
    http: &reqwest::Client,
    chat: &str,
    token: &str,
    name: &str,
) -> anyhow::Result<String> {
    let resp = http
        .post(format!("{chat}/chat/rooms"))
        .bearer_auth(token)
        .json(&json!({"name": name, "visibility": "public"}))
        .send()
        .await?;
    let v = expect_json(resp, "create room").await?;
    Ok(v["id"].as_str().context("room without id")?.to_owned())
}

/// Joins every `(account, room)` pair with `concurrency` requests in flight.
pub async fn join_all(
    http: &reqwest::Client,
    chat: &str,
    pairs: Vec<(String, String)>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let bar = crate::progress::counted("joining rooms", pairs.len() as u64);
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(pairs)
        .map(|(token, room)| {
            let (http, bar) = (http.clone(), bar.clone());
            let chat = chat.to_owned();
            async move {
                let resp = http
                    .post(format!("{chat}/chat/rooms/{room}/join"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                expect_json(resp, "join room").await?;
                bar.inc(1);
                Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    results.into_iter().collect()
}

/// Posts a message over HTTP; returns its seq.
pub async fn post_message(
    http: &reqwest::Client,
    chat: &str,
    token: &str,
    room: &str,
    body: &str,
) -> anyhow::Result<i64> {
    let resp = http
        .post(format!("{chat}/chat/rooms/{room}/messages"))
        .bearer_auth(token)
        .json(&json!({"body": body, "client_msg_id": uuid::Uuid::new_v4().to_string()}))
        .send()
        .await?;
    let v = expect_json(resp, "post message").await?;
    v["seq"].as_i64().context("message without seq")
}
