//! TOTP two-factor login (API.md "Auth additions — v1.1"): setup, enable with recovery
//! codes, the second login step, replay and skew, throttling, expiry, disable. Codes are
//! computed here from the returned secret (`auth::totp` is checked against the RFC 6238
//! vectors in its unit tests). SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{PASSWORD, TestAuth, assert_problem, mailed_token, spawn, spawn_with, token};
use kit::db::Backend;
use serde_json::{Value, json};

kit::backend_tests!(
    setup_enable_and_log_in_with_codes,
    recovery_codes_work_once,
    wrong_codes_are_throttled_like_logins,
    mfa_tokens_expire,
    disable_needs_the_password_and_a_code,
    a_password_reset_does_not_bypass_mfa,
);

/// The current time step, after waiting (if needed) until at least 12 s of it remain:
/// the tests below must not see the step change between computing and sending a code.
async fn fresh_step() -> i64 {
    loop {
        let secs = kit::time::now_ms() / 1000;
        if secs % auth::totp::STEP_SECS < auth::totp::STEP_SECS - 12 {
            return auth::totp::step_at(secs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn code(secret: &str, step: i64) -> String {
    auth::totp::code(&auth::totp::base32_decode(secret).unwrap(), step)
}

/// Sets TOTP up and enables it with the code of `step`; returns the secret and the
/// recovery codes.
async fn enable(app: &TestAuth, access: &str, step: i64) -> (String, Vec<String>) {
    let (status, body) = app
        .post(
            "/auth/mfa/totp/setup",
            json!({"current_password": PASSWORD}),
            Some(access),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            "/auth/mfa/totp/enable",
            json!({"code": code(&secret, step)}),
            Some(access),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let codes = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (secret, codes)
}

/// Logs in with the password; asserts the second step is asked for and returns its token.
async fn mfa_token(app: &TestAuth, login: &str, password: &str) -> String {
    let (status, body) = app.login(login, password).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mfa_required"], true, "{body}");
    assert_eq!(body["methods"], json!(["totp", "recovery_code"]));
    assert!(
        body["access_token"].is_null() && body["refresh_token"].is_null(),
        "{body}"
    );
    token(&body, "mfa_token")
}

async fn second_step(app: &TestAuth, mfa_token: &str, field: &str, value: &str) -> (u16, Value) {
    app.post(
        "/auth/login/mfa",
        json!({"mfa_token": mfa_token, field: value}),
        None,
    )
    .await
}

fn problem(res: &(u16, Value)) -> (u16, Option<&str>) {
    (res.0, res.1["code"].as_str())
}

async fn setup_enable_and_log_in_with_codes(backend: Backend) {
    let Some(app) = spawn(backend, "mfa_flow").await else {
        return;
    };
    let a = app.register("fay").await;
    let access = token(&a, "access_token");
    let (status, body) = app
        .post(
            "/auth/mfa/totp/setup",
            json!({"current_password": "not my password"}),
            Some(&access),
        )
        .await;
    assert_problem(status, &body, 403, "invalid_credentials");
    let (status, body) = app
        .post(
            "/auth/mfa/totp/enable",
            json!({"code": "123456"}),
            Some(&access),
        )
        .await;
    assert_problem(status, &body, 409, "mfa_not_set_up");

    // A second setup replaces the first (pending) secret.
    let (_, first) = app
        .post(
            "/auth/mfa/totp/setup",
            json!({"current_password": PASSWORD}),
            Some(&access),
        )
        .await;
    let first = first["secret"].as_str().unwrap().to_owned();
    let step = fresh_step().await;
    let (status, body) = app
        .post(
            "/auth/mfa/totp/setup",
            json!({"current_password": PASSWORD}),
            Some(&access),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert_ne!(secret, first);
    assert_eq!(
        auth::totp::base32_decode(&secret).unwrap().len(),
        20,
        "160 bits"
    );
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/IntelliColab:fay?")
            && uri.contains(&format!("secret={secret}"))
            && uri.contains("issuer=IntelliColab")
            && uri.contains("digits=6")
            && uri.contains("period=30"),
        "{uri}"
    );
    let (status, body) = app
        .post(
            "/auth/mfa/totp/enable",
            json!({"code": code(&first, step)}),
            Some(&access),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("invalid_code")),
        "old secret"
    );
    let (status, body) = app
        .post(
            "/auth/mfa/totp/enable",
            json!({"code": code(&secret, step)}),
            Some(&access),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let codes = body["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    let (_, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(me["mfa_enabled"], true, "{me}");
    let (status, body) = app
        .post(
            "/auth/mfa/totp/setup",
            json!({"current_password": PASSWORD}),
            Some(&access),
        )
        .await;
    assert_problem(status, &body, 409, "mfa_already_enabled");

    let mfa = mfa_token(&app, "fay", PASSWORD).await;
    // A wrong password still says nothing of MFA.
    let (status, body) = app.login("fay", "not my password").await;
    assert_problem(status, &body, 401, "invalid_credentials");
    let res = second_step(&app, "bogus", "code", &code(&secret, step + 1)).await;
    assert_eq!(problem(&res), (401, Some("invalid_token")), "{}", res.1);
    // The code that enabled it was used: a replay is refused.
    let res = second_step(&app, &mfa, "code", &code(&secret, step)).await;
    assert_eq!(
        problem(&res),
        (401, Some("invalid_code")),
        "replay: {}",
        res.1
    );
    // Two steps ahead is outside the skew; one behind is older than the used one.
    let res = second_step(&app, &mfa, "code", &code(&secret, step + 2)).await;
    assert_eq!(problem(&res), (401, Some("invalid_code")), "+2: {}", res.1);
    let res = second_step(&app, &mfa, "code", &code(&secret, step - 1)).await;
    assert_eq!(
        problem(&res),
        (401, Some("invalid_code")),
        "-1 after 0: {}",
        res.1
    );
    let both = app
        .post(
            "/auth/login/mfa",
            json!({"mfa_token": mfa, "code": "123456", "recovery_code": "x"}),
            None,
        )
        .await;
    assert_eq!(problem(&both), (400, Some("validation_failed")));
    // One step ahead (a fast phone clock) is accepted.
    let (status, tokens) = second_step(&app, &mfa, "code", &code(&secret, step + 1)).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["user"]["mfa_enabled"], true);
    assert!(tokens["device_token"].is_string());
    let (status, _) = app
        .get("/auth/me", Some(&token(&tokens, "access_token")))
        .await;
    assert_eq!(status, 200);
    // The mfa_token is single-use.
    let res = second_step(&app, &mfa, "code", &code(&secret, step + 1)).await;
    assert_eq!(problem(&res), (401, Some("invalid_token")), "{}", res.1);
    // Once used, the same code fails at a fresh login too.
    let again = mfa_token(&app, "fay@example.com", PASSWORD).await;
    let res = second_step(&app, &again, "code", &code(&secret, step + 1)).await;
    assert_eq!(problem(&res), (401, Some("invalid_code")), "{}", res.1);
    // The account holder heard of it.
    let notices = app.mails_to("fay@example.com", 1).await;
    assert!(
        notices[0].contains("Two-factor login was turned on") && notices[0].contains("Hello fay,"),
        "{}",
        notices[0]
    );
    app.stop().await;
}

async fn recovery_codes_work_once(backend: Backend) {
    let Some(app) = spawn(backend, "mfa_recovery").await else {
        return;
    };
    let a = app.register("gia").await;
    let step = fresh_step().await;
    let (_, codes) = enable(&app, &token(&a, "access_token"), step).await;
    assert_eq!(
        codes.iter().collect::<std::collections::HashSet<_>>().len(),
        10,
        "distinct"
    );
    let mfa = mfa_token(&app, "gia", PASSWORD).await;
    let (status, body) = second_step(&app, &mfa, "recovery_code", &codes[0]).await;
    assert_eq!(status, 200, "{body}");
    let mfa = mfa_token(&app, "gia", PASSWORD).await;
    let res = second_step(&app, &mfa, "recovery_code", &codes[0]).await;
    assert_eq!(
        problem(&res),
        (401, Some("invalid_code")),
        "used: {}",
        res.1
    );
    // Typed from paper: case and dashes do not matter.
    let typed = codes[1].replace('-', "").to_lowercase();
    let (status, body) = second_step(&app, &mfa, "recovery_code", &typed).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

async fn wrong_codes_are_throttled_like_logins(backend: Backend) {
    let Some(app) = spawn(backend, "mfa_throttle").await else {
        return;
    };
    let a = app.register("hal").await;
    let step = fresh_step().await;
    let (secret, _) = enable(&app, &token(&a, "access_token"), step).await;
    let mfa = mfa_token(&app, "hal", PASSWORD).await;
    let wrong = format!(
        "{:06}",
        (code(&secret, step + 1).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    for i in 0..4 {
        let res = second_step(&app, &mfa, "code", &wrong).await;
        assert_eq!(
            problem(&res),
            (401, Some("invalid_code")),
            "attempt {i}: {}",
            res.1
        );
    }
    // A right password in between forgives nothing (else guesses would never end).
    let mfa = mfa_token(&app, "hal", PASSWORD).await;
    let res = second_step(&app, &mfa, "code", &wrong).await;
    assert_eq!(problem(&res), (401, Some("invalid_code")), "5th: {}", res.1);
    // Five failures of this account from this address (the login limit): refused, even
    // with the right code.
    let res = app
        .http
        .post(format!("{}/auth/login/mfa", app.url))
        .json(&json!({"mfa_token": mfa, "code": code(&secret, step + 1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // Another address is not refused (and a right code works there).
    let res = app
        .http
        .post(format!("{}/auth/login/mfa", app.url))
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"mfa_token": mfa, "code": code(&secret, step + 1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.stop().await;
}

async fn mfa_tokens_expire(backend: Backend) {
    let Some(app) = spawn_with(backend, "mfa_expiry", |c| c.mfa_token_ttl_secs = 1).await else {
        return;
    };
    let a = app.register("ivy").await;
    let step = fresh_step().await;
    let (secret, _) = enable(&app, &token(&a, "access_token"), step).await;
    let mfa = mfa_token(&app, "ivy", PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let res = second_step(&app, &mfa, "code", &code(&secret, step + 1)).await;
    assert_eq!(problem(&res), (401, Some("invalid_token")), "{}", res.1);
    app.stop().await;
}

async fn disable_needs_the_password_and_a_code(backend: Backend) {
    let Some(app) = spawn(backend, "mfa_disable").await else {
        return;
    };
    let a = app.register("joe").await;
    let access = token(&a, "access_token");
    let (status, body) = app
        .post(
            "/auth/mfa/totp/disable",
            json!({"current_password": PASSWORD, "code": "123456"}),
            Some(&access),
        )
        .await;
    assert_problem(status, &body, 409, "mfa_not_enabled");
    let step = fresh_step().await;
    let (secret, codes) = enable(&app, &access, step).await;
    let cases = [
        (
            json!({"current_password": "nope", "code": code(&secret, step + 1)}),
            403,
            "invalid_credentials",
        ),
        (
            json!({"current_password": PASSWORD, "code": code(&secret, step)}),
            403,
            "invalid_code",
        ),
        (
            json!({"current_password": PASSWORD, "code": "AAAA-BBBB-CCCC-DDDD"}),
            403,
            "invalid_code",
        ),
        (
            json!({"current_password": PASSWORD}),
            400,
            "validation_failed",
        ),
    ];
    for (body, status, code_) in cases {
        let (s, problem) = app
            .post("/auth/mfa/totp/disable", body.clone(), Some(&access))
            .await;
        assert_eq!(
            (s, problem["code"].as_str()),
            (status, Some(code_)),
            "{body}: {problem}"
        );
    }
    let (status, body) = app
        .post(
            "/auth/mfa/totp/disable",
            json!({"current_password": PASSWORD, "code": codes[3]}),
            Some(&access),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(me["mfa_enabled"], false);
    let (status, body) = app.login("joe", PASSWORD).await;
    assert_eq!(status, 200);
    assert!(
        body["access_token"].is_string(),
        "no second step any more: {body}"
    );
    // Recovery codes went with it.
    let step = fresh_step().await;
    enable(&app, &access, step).await;
    let mfa = mfa_token(&app, "joe", PASSWORD).await;
    let res = second_step(&app, &mfa, "recovery_code", &codes[4]).await;
    assert_eq!(problem(&res), (401, Some("invalid_code")), "{}", res.1);
    app.stop().await;
}

async fn a_password_reset_does_not_bypass_mfa(backend: Backend) {
    let Some(app) = spawn(backend, "mfa_after_reset").await else {
        return;
    };
    let a = app.register("kai").await;
    let step = fresh_step().await;
    enable(&app, &token(&a, "access_token"), step).await;
    app.post(
        "/auth/password-reset/request",
        json!({"email": "kai@example.com"}),
        None,
    )
    .await;
    let reset = app
        .mails_to("kai@example.com", 2)
        .await
        .into_iter()
        .find(|m| m.contains("Subject: Reset your IntelliColab password"))
        .unwrap();
    let (status, body) = app
        .post(
            "/auth/password-reset/confirm",
            json!({"token": mailed_token(&reset), "new_password": "a brand new phrase"}),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    mfa_token(&app, "kai", "a brand new phrase").await;
    app.stop().await;
}
