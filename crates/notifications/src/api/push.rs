//! Web Push subscriptions: the VAPID public key, subscribe, unsubscribe.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use kit::http::{Json, Path};
use kit::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use token::AuthUser;
use uuid::Uuid;

use crate::state::ApiContext;
use crate::store::push;

/// Longest endpoint accepted (the push services' URLs are ~200 characters).
const MAX_ENDPOINT: usize = 2048;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/notifications/push/vapid-public-key", get(vapid_key))
        .route("/notifications/push/subscriptions", post(subscribe))
        .route(
            "/notifications/push/subscriptions/{id}",
            delete(unsubscribe),
        )
}

#[derive(Serialize)]
struct Key {
    key: String,
}

async fn vapid_key(State(ctx): State<ApiContext>, _user: AuthUser) -> Json<Key> {
    Json(Key {
        key: ctx.vapid.public_b64.clone(),
    })
}

#[derive(Deserialize)]
struct Keys {
    p256dh: String,
    auth: String,
}

#[derive(Deserialize)]
struct SubscribeBody {
    endpoint: String,
    keys: Keys,
}

#[derive(Serialize)]
struct Created {
    id: Uuid,
}

/// https, or http for an origin configured for tests (`push_http_origins`).
fn endpoint_ok(ctx: &ApiContext, endpoint: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        return false;
    };
    if url.host_str().is_none() || endpoint.len() > MAX_ENDPOINT {
        return false;
    }
    match url.scheme() {
        "https" => !internal_host(&url),
        "http" => ctx
            .push_http_origins
            .iter()
            .any(|o| o.trim_end_matches('/') == url.origin().ascii_serialization()),
        _ => false,
    }
}

/// Whether an endpoint names this machine or a private network by its address or a
/// reserved name: the server POSTs to every subscription, so such an endpoint would let any
/// user make it send requests inside the deployment (SSRF). Push services are public hosts.
/// A public name that resolves to a private address is not caught here.
fn internal_host(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return true;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return private_ip(ip);
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || [".localhost", ".local", ".internal"]
            .iter()
            .any(|s| name.ends_with(s))
        // A single label (`redis`, `postgres`): a name only a private resolver knows.
        || !name.contains('.')
}

fn private_ip(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // 100.64.0.0/10, carrier-grade NAT (cluster networks use it too).
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link local.
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| private_ip(IpAddr::V4(v4)))
        }
    }
}

async fn subscribe(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Json(body): Json<SubscribeBody>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    if !endpoint_ok(&ctx, &body.endpoint) {
        return Err(ApiError::validation(
            "endpoint",
            "must be an https URL of a public push service",
        ));
    }
    if crate::push::decode_keys(&body.keys.p256dh, &body.keys.auth).is_none() {
        return Err(ApiError::validation(
            "keys",
            "p256dh must be a base64url P-256 point (65 bytes) and auth 16 base64url bytes",
        ));
    }
    let id = push::upsert_subscription(
        ctx.db.pool(),
        user.id,
        &body.endpoint,
        &body.keys.p256dh,
        &body.keys.auth,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

async fn unsubscribe(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    if push::delete_subscription(ctx.db.pool(), user.id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            kit::error::code::SUBSCRIPTION_NOT_FOUND,
            "no such push subscription",
        ))
    }
}
