//! kill -9 of a real chat process while 10 clients send with `client_msg_id`s and retry
//! on failure: after the restart every acknowledged message is in the history exactly
//! once, and the room's seqs have no hole.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kit::db::Backend;
use serde_json::{Value, json};
use token::testing::TestIssuer;

kit::backend_tests!(kill_9_loses_no_acknowledged_message);

const CLIENTS: usize = 10;
const PER_CLIENT: usize = 40;

struct Node {
    env: Vec<(String, String)>,
    url: String,
    child: Option<tokio::process::Child>,
}

impl Node {
    async fn start(&mut self) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-node"));
        cmd.envs(self.env.iter().cloned())
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().unwrap());
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the chat node did not come up");
    }

    async fn kill_9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
    }
}

async fn kill_9_loses_no_acknowledged_message(backend: Backend) {
    let Some(db) = kit::testing::test_db(backend, "kill_9").await else {
        return;
    };
    let issuer = TestIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut env = vec![
        (
            "INTELLICOLAB_CHAT__LISTEN".to_owned(),
            format!("127.0.0.1:{port}"),
        ),
        (
            "INTELLICOLAB_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
        ("INTELLICOLAB_AUTH_URL".to_owned(), issuer.auth_url.clone()),
        (
            "INTELLICOLAB_CHAT__SEND_RATE_PER_SEC".to_owned(),
            "10000".to_owned(),
        ),
        (
            "INTELLICOLAB_CHAT__SEND_BURST".to_owned(),
            "10000".to_owned(),
        ),
    ];
    if let Some(url) = &db.url {
        env.push(("INTELLICOLAB_CHAT__DATABASE_URL".to_owned(), url.clone()));
    }
    let mut node = Node {
        env,
        url: format!("http://127.0.0.1:{port}"),
        child: None,
    };
    node.start().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let owner_id = uuid::Uuid::now_v7();
    let owner = issuer.token(owner_id, "owner");
    let res = http
        .post(format!("{}/chat/rooms", node.url))
        .bearer_auth(&owner)
        .json(&json!({"name": "crash", "visibility": "public"}))
        .send()
        .await
        .unwrap();
    let (_, room) = common::read(res).await;
    let room = room["id"].as_str().unwrap().to_owned();

    let acked = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let token = issuer.token(uuid::Uuid::now_v7(), &format!("c{c}"));
        let (http, url, room, acked) =
            (http.clone(), node.url.clone(), room.clone(), acked.clone());
        let failures = failures.clone();
        clients.push(tokio::spawn(async move {
            let join = format!("{url}/chat/rooms/{room}/join");
            while !http
                .post(&join)
                .bearer_auth(&token)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut mine: HashMap<String, Value> = HashMap::new();
            for i in 0..PER_CLIENT {
                let cmid = format!("c{c}-{i}");
                // Retry until acknowledged: the server may be dead or restarting.
                loop {
                    let sent = http
                        .post(format!("{url}/chat/rooms/{room}/messages"))
                        .bearer_auth(&token)
                        .json(&json!({"body": format!("message {cmid}"), "client_msg_id": cmid}))
                        .send()
                        .await;
                    if let Ok(res) = sent
                        && (res.status() == 201 || res.status() == 200)
                        && let Ok(m) = res.json::<Value>().await
                    {
                        if let Some(before) = mine.get(&cmid) {
                            assert_eq!(before["id"], m["id"]);
                        }
                        mine.insert(cmid.clone(), m);
                        acked.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    failures.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            mine
        }));
    }

    // Kill the node twice in the middle of the traffic.
    for round in 1..=2 {
        while acked.load(Ordering::SeqCst) < round * CLIENTS * PER_CLIENT / 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.kill_9().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        node.start().await;
    }
    let mut acknowledged = HashMap::new();
    for c in clients {
        acknowledged.extend(c.await.unwrap());
    }
    assert_eq!(acknowledged.len(), CLIENTS * PER_CLIENT);
    assert!(
        failures.load(Ordering::SeqCst) > 0,
        "the kills hit the traffic"
    );

    // Every acknowledged message exactly once, as acknowledged; the log has no hole.
    let mut stored: HashMap<String, Value> = HashMap::new();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let res = http
            .get(format!(
                "{}/chat/rooms/{room}/events?after={after}&limit=100",
                node.url
            ))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap();
        let (s, page) = common::read(res).await;
        assert_eq!(s, 200, "{page}");
        for e in page["items"].as_array().unwrap() {
            after = e["seq"].as_i64().unwrap();
            seqs.push(after);
            if e["kind"] == "message.created" {
                let cmid = e["message"]["client_msg_id"].as_str().unwrap().to_owned();
                assert!(
                    stored.insert(cmid.clone(), e["message"].clone()).is_none(),
                    "{cmid} stored twice"
                );
            }
        }
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    for (cmid, m) in &acknowledged {
        assert_eq!(
            stored.get(cmid),
            Some(m),
            "{cmid} acknowledged but not stored as such"
        );
    }
    assert_eq!(stored.len(), acknowledged.len());
    node.kill_9().await;
}
