//! Runs account flows against the real binary with debug logging and checks that no
//! password, access token, refresh token or reset token appears in its logs.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::{Proc, free_port, wait_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut proc = Proc::start(
        dir.path(),
        "auth",
        &["serve", "auth", "--data-dir", dir.path().to_str().unwrap()],
        &[("INTELLICOLAB_AUTH__LISTEN", format!("127.0.0.1:{port}"))],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz")).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value, token: Option<String>| {
        let mut req = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    let password = "Sup3r-Secret-Passphrase!";
    let new_password = "An0ther-Secret-Phrase?";
    let reg: Value = post(
        "/auth/register",
        json!({"username": "sam", "email": "sam@example.com", "password": password}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let mut secrets = vec![password.to_owned(), new_password.to_owned()];
    secrets.push(reg["access_token"].as_str().unwrap().to_owned());
    secrets.push(reg["refresh_token"].as_str().unwrap().to_owned());
    secrets.push(reg["device_token"].as_str().unwrap().to_owned());
    post(
        "/auth/login",
        json!({"login": "sam", "password": "wrong-guess-123"}),
        None,
    )
    .await
    .unwrap();
    let login: Value = post(
        "/auth/login",
        json!({"login": "sam", "password": password}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    secrets.push(login["access_token"].as_str().unwrap().to_owned());
    let refreshed: Value = post(
        "/auth/refresh",
        json!({"refresh_token": login["refresh_token"]}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    secrets.push(login["refresh_token"].as_str().unwrap().to_owned());
    secrets.push(refreshed["refresh_token"].as_str().unwrap().to_owned());
    // A token in the query string (as browsers send it to WebSockets) is not logged either.
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    http.get(format!("{base}/auth/me?access_token={access}"))
        .send()
        .await
        .unwrap();
    secrets.push(access.clone());
    post(
        "/auth/password",
        json!({"current_password": password, "new_password": new_password}),
        Some(access.clone()),
    )
    .await
    .unwrap();
    post(
        "/auth/password-reset/request",
        json!({"email": "sam@example.com"}),
        None,
    )
    .await
    .unwrap();
    let outbox = dir.path().join("outbox");
    // The reset mail and the registration's verification mail: both tokens stay out of the logs.
    let reset = mailed_token(&outbox, "Subject: Reset your IntelliColab password").await;
    let verify = mailed_token(&outbox, "Subject: Verify your IntelliColab email address").await;
    secrets.push(verify);
    post(
        "/auth/password-reset/confirm",
        json!({"token": reset, "new_password": "Third-Secret-Phrase#"}),
        None,
    )
    .await
    .unwrap();
    secrets.push(reset);
    secrets.push("Third-Secret-Phrase#".to_owned());

    // A login presenting its device token, then an email change: the device token and the
    // token mailed to the new address stay out of the logs too.
    let login: Value = post(
        "/auth/login",
        json!({"login": "sam", "password": "Third-Secret-Phrase#", "device_token": reg["device_token"]}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let access = login["access_token"].as_str().unwrap().to_owned();
    secrets.push(access.clone());
    secrets.push(login["refresh_token"].as_str().unwrap().to_owned());
    secrets.push(login["device_token"].as_str().unwrap().to_owned());
    let res = post(
        "/auth/email",
        json!({"email": "sam.new@example.com", "current_password": "Third-Secret-Phrase#"}),
        Some(access),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 202);
    let mut change = None;
    for _ in 0..100 {
        change = std::fs::read_dir(&outbox).unwrap().find_map(|f| {
            let mail = std::fs::read_to_string(f.unwrap().path()).unwrap();
            mail.lines()
                .any(|l| l == "To: sam.new@example.com")
                .then_some(mail)
        });
        if change.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let change = change.expect("the confirmation mail to the new address");
    let token = change
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 43 && !l.contains(' '))
        .unwrap()
        .to_owned();
    let res = post("/auth/email/verify/confirm", json!({"token": token}), None)
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    secrets.push(token);

    assert!(proc.terminate().success(), "graceful shutdown on SIGTERM");
    let logs = proc.logs();
    assert!(logs.lines().count() > 5, "the run logged something: {logs}");
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "JSON log lines"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret leaked into the logs: {}…",
            &secret[..6]
        );
    }
}

/// The 43-character token of the first `.eml` in `outbox` that has the line `header`
/// (waits up to 5 s for the mail to be written).
async fn mailed_token(outbox: &std::path::Path, header: &str) -> String {
    for _ in 0..100 {
        let found = std::fs::read_dir(outbox).ok().and_then(|dir| {
            dir.filter_map(|f| std::fs::read_to_string(f.ok()?.path()).ok())
                .find(|mail| mail.lines().any(|l| l == header))
        });
        if let Some(mail) = found {
            return mail
                .lines()
                .map(str::trim)
                .find(|l| l.len() == 43 && !l.contains(' '))
                .expect("a token in the mail")
                .to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no mail with {header:?} in {}", outbox.display());
}
