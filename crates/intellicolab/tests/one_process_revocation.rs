//! One process (`serve all`, in-process bus): an ended session is refused everywhere
//! as soon as logout answers 204, and still after the process restarts (the in-process
//! bus keeps nothing; the services reload the list from auth before they report ready).
//! Checked through the gateway and at each service directly, over HTTP and the WebSocket.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Client, Ports, Proc};

async fn ws_status(base: &str, token: &str) -> u16 {
    let url = format!(
        "{}/chat/ws?access_token={token}",
        base.replacen("http", "ws", 1)
    );
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("websocket handshake failed: {e}"),
    }
}

/// Statuses of `/users/me`, `/chat/rooms` and the chat WebSocket for `token`, through the
/// gateway and at the services themselves.
async fn statuses(ports: &Ports, token: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for (base, path) in [
        (ports.gateway_url(), "/users/me"),
        (ports.gateway_url(), "/chat/rooms"),
        (ports.users_url(), "/users/me"),
        (ports.chat_url(), "/chat/rooms"),
    ] {
        let (s, _, _) = Client::new(&base)
            .call("GET", path, Some(token), None)
            .await;
        out.push((format!("{base}{path}"), s));
    }
    for base in [ports.gateway_url(), ports.chat_url()] {
        out.push((format!("{base}/chat/ws"), ws_status(&base, token).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_is_refused_at_once_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let env = ports.env(dir.path());
    let mut proc = Proc::start(dir.path(), "all", &["serve", "all"], &env);
    ports.wait_all_ready().await;
    let api = Client::new(&ports.gateway_url());
    // Logins straight at auth: the gateway's strict policy allows a burst of 5 per client.
    let auth = Client::new(&ports.auth_url());
    let mut alice = api.register("alice").await;

    // The outside drill saw 1–11 of 24 ended tokens accepted once, 2–8 ms after the 204.
    let mut ended = String::new();
    for round in 0..24 {
        auth.login(&mut alice).await;
        // Used once, so every cache in front of the services holds it.
        let (s, _, _) = api
            .call("GET", "/users/me", Some(&alice.access), None)
            .await;
        assert_eq!(s, 200);
        let (s, body, _) = api
            .call("POST", "/auth/logout", Some(&alice.access), None)
            .await;
        assert_eq!(s, 204, "logout: {body}");
        for path in ["/users/me", "/chat/rooms"] {
            let (s, body, _) = api.call("GET", path, Some(&alice.access), None).await;
            assert_eq!(
                s, 401,
                "round {round}: {path} accepted an ended session: {body}"
            );
        }
        ended = alice.access.clone();
    }
    for (what, status) in statuses(&ports, &ended).await {
        assert_eq!(status, 401, "{what} before the restart");
    }

    proc.terminate();
    let mut proc = Proc::start(dir.path(), "all-again", &["serve", "all"], &env);
    ports.wait_all_ready().await;
    for (what, status) in statuses(&ports, &ended).await {
        assert_eq!(status, 401, "{what} after the restart");
    }
    // A live session still works after the restart.
    auth.login(&mut alice).await;
    for (what, status) in statuses(&ports, &alice.access).await {
        let ok = if what.ends_with("/ws") { 101 } else { 200 };
        assert_eq!(status, ok, "{what} with a live session");
    }
    proc.terminate();
}
