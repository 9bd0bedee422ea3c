//! Passkeys (API.md v1.1, WebAuthn Level 2): register one while logged in, log in with
//! one without a password, list and delete them. The ceremony checks are in
//! [`crate::webauthn`].
//!
//! Each `…/start` answers the WebAuthn options in their standard JSON form
//! (`PublicKeyCredentialCreationOptionsJSON` / `…RequestOptionsJSON`, for
//! `PublicKeyCredential.parseCreationOptionsFromJSON` and friends); each `…/finish` takes the
//! browser's `PublicKeyCredential` JSON (`toJSON()`). The challenge in the options is
//! the handle: finish finds it again in `clientDataJSON`, so no other id travels. A
//! challenge lives 5 minutes and is used up by the first finish that presents it.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kit::error::code;
use kit::http::{Json, Path};
use kit::net::ClientIp;
use kit::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CurrentSession, TokenResponse, start_session, user_agent};
use crate::state::ApiContext;
use crate::store::{self, passkeys::PasskeyRow};
use crate::webauthn::{ALGORITHMS, ClientData, PublicKey, Refusal};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/auth/passkeys", get(list))
        .route("/auth/passkeys/{id}", delete(remove))
        .route("/auth/passkeys/register/start", post(register_start))
        .route("/auth/passkeys/register/finish", post(register_finish))
        .route("/auth/passkeys/login/start", post(login_start))
        .route("/auth/passkeys/login/finish", post(login_finish))
}

/// How long a ceremony may take: the options' `timeout` and the challenge's lifetime.
const CEREMONY_MS: i64 = 5 * 60 * 1000;
/// Passkeys per account: enough for every device of a person several times over, and it
/// bounds `excludeCredentials` (sent at each registration).
const MAX_PER_USER: i64 = 20;
const MAX_NAME_CHARS: usize = 64;
const PURPOSE_REGISTER: &str = "register";
const PURPOSE_LOGIN: &str = "login";

#[derive(Serialize)]
struct PasskeyView {
    id: uuid::Uuid,
    name: String,
    #[serde(serialize_with = "kit::time::ser_rfc3339::serialize")]
    created_at: i64,
    #[serde(serialize_with = "kit::time::ser_rfc3339_opt::serialize")]
    last_used_at: Option<i64>,
}

impl From<PasskeyRow> for PasskeyView {
    fn from(p: PasskeyRow) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

#[derive(Serialize)]
struct PasskeyList {
    items: Vec<PasskeyView>,
}

/// GET /auth/passkeys — the caller's passkeys, oldest first.
async fn list(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
) -> ApiResult<Json<PasskeyList>> {
    let rows = store::passkeys::list(ctx.db.pool(), caller.user_id).await?;
    Ok(Json(PasskeyList {
        items: rows.into_iter().map(PasskeyView::from).collect(),
    }))
}

/// DELETE /auth/passkeys/{id} — the caller's own only; anyone else's is 404 like a
/// missing one.
async fn remove(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
    Path(id): Path<uuid::Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = ctx.db.begin().await?;
    let deleted = store::passkeys::delete(tx.conn(), caller.user_id, id).await?;
    tx.commit().await?;
    if !deleted {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            code::PASSKEY_NOT_FOUND,
            "you have no such passkey",
        ));
    }
    tracing::info!(user_id = %caller.user_id, passkey_id = %id, "passkey deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A new random challenge, stored (hashed) for `purpose`; returns it base64url.
async fn new_challenge(
    ctx: &ApiContext,
    purpose: &str,
    user_id: Option<uuid::Uuid>,
) -> Result<String, ApiError> {
    let challenge = store::random_token();
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    store::passkeys::insert_challenge(
        tx.conn(),
        &store::token_hash(&challenge),
        purpose,
        user_id,
        now,
        now + CEREMONY_MS,
    )
    .await?;
    tx.commit().await?;
    Ok(challenge)
}

/// Takes the challenge `client_data` names: `Some(user id or None)` when it was issued
/// for `purpose` and has not expired; gone afterwards either way.
async fn take_challenge(
    ctx: &ApiContext,
    client_data: &ClientData,
    purpose: &str,
) -> Result<Option<Option<uuid::Uuid>>, ApiError> {
    let mut tx = ctx.db.begin().await?;
    let taken = store::passkeys::take_challenge(
        tx.conn(),
        &store::token_hash(&client_data.challenge),
        purpose,
        kit::time::now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(taken)
}

/// POST /auth/passkeys/register/start — creation options for the caller: a resident
/// (discoverable) key, user verification preferred, the caller's existing credentials
/// excluded (an authenticator holds one passkey per account).
async fn register_start(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
) -> ApiResult<Json<Value>> {
    let user = store::users::by_id(ctx.db.pool(), caller.user_id)
        .await?
        .ok_or_else(|| token::extract::rejection(token::TokenError::Revoked))?;
    let existing = store::passkeys::list(ctx.db.pool(), caller.user_id).await?;
    if existing.len() as i64 >= MAX_PER_USER {
        return Err(too_many());
    }
    let challenge = new_challenge(&ctx, PURPOSE_REGISTER, Some(user.id)).await?;
    let rp = &ctx.relying_party;
    Ok(Json(json!({
        "rp": {"id": rp.id, "name": rp.name},
        "user": {
            // The user handle: the account id's 16 bytes, never personal data (L2 §14.6.1).
            "id": URL_SAFE_NO_PAD.encode(user.id.as_bytes()),
            "name": user.username,
            "displayName": user.display_name,
        },
        "challenge": challenge,
        "pubKeyCredParams": ALGORITHMS
            .iter()
            .map(|alg| json!({"type": "public-key", "alg": alg}))
            .collect::<Vec<_>>(),
        "timeout": CEREMONY_MS,
        "excludeCredentials": existing
            .iter()
            .map(|p| json!({"type": "public-key", "id": p.credential_id}))
            .collect::<Vec<_>>(),
        "authenticatorSelection": {
            "residentKey": "required",
            "requireResidentKey": true,
            "userVerification": "preferred",
        },
        "attestation": "none",
    })))
}

#[derive(Deserialize)]
struct AttestationResponse {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    #[serde(rename = "attestationObject")]
    attestation_object: String,
}

/// The browser's `PublicKeyCredential.toJSON()` of a registration, plus a name.
#[derive(Deserialize)]
struct RegisterFinishBody {
    #[serde(rename = "rawId")]
    raw_id: String,
    #[serde(rename = "type")]
    kind: String,
    response: AttestationResponse,
    #[serde(default)]
    name: Option<String>,
}

fn too_many() -> ApiError {
    ApiError::conflict(
        code::TOO_MANY_PASSKEYS,
        format!("an account has at most {MAX_PER_USER} passkeys; delete one first"),
    )
}

/// Decodes base64url with or without padding.
fn b64(field: &str, s: &str) -> Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| Refusal(format!("{field} is not base64url")))
}

/// The name a person gives a passkey: trimmed, 1–64 characters, "Passkey" when absent.
fn passkey_name(name: Option<&str>) -> Result<String, ApiError> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Ok("Passkey".to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "name",
            format!("at most {MAX_NAME_CHARS} characters, no control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// POST /auth/passkeys/register/finish — verifies the new credential (§7.1) and stores it.
async fn register_finish(
    State(ctx): State<ApiContext>,
    caller: CurrentSession,
    Json(body): Json<RegisterFinishBody>,
) -> ApiResult<(StatusCode, Json<PasskeyView>)> {
    let name = passkey_name(body.name.as_deref())?;
    let refused = |r: Refusal| ApiError::bad_request(code::INVALID_PASSKEY, r.0);
    if body.kind != "public-key" {
        return Err(refused(Refusal("type is not public-key".to_owned())));
    }
    let client_data_json =
        b64("clientDataJSON", &body.response.client_data_json).map_err(refused)?;
    let attestation =
        b64("attestationObject", &body.response.attestation_object).map_err(refused)?;
    let raw_id = b64("rawId", &body.raw_id).map_err(refused)?;
    let client_data = ctx
        .relying_party
        .client_data(&client_data_json, "webauthn.create")
        .map_err(refused)?;
    match take_challenge(&ctx, &client_data, PURPOSE_REGISTER).await? {
        Some(Some(user)) if user == caller.user_id => {}
        _ => {
            return Err(refused(Refusal(
                "the challenge is unknown, already used or expired; start again".to_owned(),
            )));
        }
    }
    let credential = ctx
        .relying_party
        .verify_registration(&client_data, &attestation)
        .map_err(refused)?;
    if credential.credential_id != raw_id {
        return Err(refused(Refusal(
            "rawId is not the credential id in the authenticator data".to_owned(),
        )));
    }
    let now = kit::time::now_ms();
    let row = PasskeyRow {
        id: uuid::Uuid::now_v7(),
        user_id: caller.user_id,
        credential_id: URL_SAFE_NO_PAD.encode(&credential.credential_id),
        algorithm: credential.key.alg,
        public_key: URL_SAFE_NO_PAD.encode(&credential.key.bytes),
        sign_count: i64::from(credential.sign_count),
        name,
        created_at: now,
        last_used_at: None,
    };
    let mut tx = ctx.db.begin().await?;
    if store::passkeys::count(tx.conn(), caller.user_id).await? >= MAX_PER_USER {
        return Err(too_many());
    }
    if !store::passkeys::insert(tx.conn(), &row).await? {
        return Err(ApiError::conflict(
            code::PASSKEY_EXISTS,
            "this passkey is already registered",
        ));
    }
    tx.commit().await?;
    metrics::counter!("auth_passkeys_registered_total").increment(1);
    tracing::info!(user_id = %caller.user_id, passkey_id = %row.id, alg = row.algorithm, "passkey registered");
    Ok((StatusCode::CREATED, Json(PasskeyView::from(row))))
}

/// POST /auth/passkeys/login/start — request options for a discoverable credential: no
/// `allowCredentials`, the authenticator offers the passkeys it holds for this site.
async fn login_start(State(ctx): State<ApiContext>) -> ApiResult<Json<Value>> {
    let challenge = new_challenge(&ctx, PURPOSE_LOGIN, None).await?;
    Ok(Json(json!({
        "challenge": challenge,
        "rpId": ctx.relying_party.id,
        "timeout": CEREMONY_MS,
        "allowCredentials": [],
        "userVerification": "preferred",
    })))
}

#[derive(Deserialize)]
struct AssertionResponse {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    #[serde(rename = "authenticatorData")]
    authenticator_data: String,
    signature: String,
    #[serde(rename = "userHandle", default)]
    user_handle: Option<String>,
}

/// The browser's `PublicKeyCredential.toJSON()` of an assertion.
#[derive(Deserialize)]
struct LoginFinishBody {
    #[serde(rename = "rawId")]
    raw_id: String,
    #[serde(rename = "type")]
    kind: String,
    response: AssertionResponse,
}

/// POST /auth/passkeys/login/finish — verifies the assertion (§7.2) and starts a
/// session. Passwordless, and it counts as the second factor too: the authenticator is
/// something the person has, unlocked (user verification) where it can.
async fn login_finish(
    State(ctx): State<ApiContext>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<LoginFinishBody>,
) -> ApiResult<Json<TokenResponse>> {
    let refused = |r: Refusal| {
        metrics::counter!("auth_logins_total", "outcome" => "invalid_passkey").increment(1);
        ApiError::unauthorized(code::INVALID_PASSKEY, r.0)
    };
    if body.kind != "public-key" {
        return Err(refused(Refusal("type is not public-key".to_owned())));
    }
    let client_data_json =
        b64("clientDataJSON", &body.response.client_data_json).map_err(refused)?;
    let auth_data = b64("authenticatorData", &body.response.authenticator_data).map_err(refused)?;
    let signature = b64("signature", &body.response.signature).map_err(refused)?;
    let raw_id = b64("rawId", &body.raw_id).map_err(refused)?;
    let client_data = ctx
        .relying_party
        .client_data(&client_data_json, "webauthn.get")
        .map_err(refused)?;
    if take_challenge(&ctx, &client_data, PURPOSE_LOGIN)
        .await?
        .is_none()
    {
        return Err(refused(Refusal(
            "the challenge is unknown, already used or expired; start again".to_owned(),
        )));
    }
    let passkey =
        store::passkeys::by_credential_id(ctx.db.pool(), &URL_SAFE_NO_PAD.encode(&raw_id))
            .await?
            .ok_or_else(|| refused(Refusal("this passkey is not registered here".to_owned())))?;
    // §7.2 step 6: a discoverable credential names its user; it must be the owner.
    let handle = body
        .response
        .user_handle
        .as_deref()
        .map(|h| b64("userHandle", h))
        .transpose()
        .map_err(refused)?;
    if handle.as_deref() != Some(passkey.user_id.as_bytes().as_slice()) {
        return Err(refused(Refusal(
            "userHandle is not the passkey's account".to_owned(),
        )));
    }
    let key = PublicKey {
        alg: passkey.algorithm,
        bytes: b64("public key", &passkey.public_key).map_err(refused)?,
    };
    let count = i64::from(
        ctx.relying_party
            .verify_assertion(&client_data, &auth_data, &signature, &key)
            .map_err(refused)?,
    );
    // §7.2 step 21: authenticators that keep a counter increase it at each assertion; one
    // that did not move forward may be a clone of the authenticator. Both 0 = no counter
    // (synced passkeys keep none).
    let stored = passkey.sign_count;
    let cloned = || {
        metrics::counter!("auth_logins_total", "outcome" => "passkey_clone_detected").increment(1);
        tracing::warn!(user_id = %passkey.user_id, passkey_id = %passkey.id, stored, presented = count,
            "passkey signature counter did not increase: possibly a cloned authenticator; login refused");
        ApiError::unauthorized(
            code::PASSKEY_CLONE_DETECTED,
            "this passkey's signature counter went backwards; it may have been copied. Log in another way and replace it",
        )
    };
    if (count != 0 || stored != 0) && count <= stored {
        return Err(cloned());
    }
    let now = kit::time::now_ms();
    let mut tx = ctx.db.begin().await?;
    // Compared with what was read: a concurrent login with the same counter loses here.
    if !store::passkeys::record_use(tx.conn(), passkey.id, stored, count, now).await? {
        return Err(cloned());
    }
    let user = store::users::by_id(tx.conn(), passkey.user_id)
        .await?
        .ok_or_else(|| refused(Refusal("the passkey's account no longer exists".to_owned())))?;
    let tokens = start_session(&ctx, &mut tx, &user, user_agent(&headers), ip.to_string()).await?;
    tx.commit().await?;
    metrics::counter!("auth_logins_total", "outcome" => "success").increment(1);
    tracing::info!(user_id = %user.id, passkey_id = %passkey.id, "login with a passkey");
    Ok(Json(tokens))
}
