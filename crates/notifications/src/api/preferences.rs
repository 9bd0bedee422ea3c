//! `GET / PUT /notifications/preferences`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kit::error::FieldError;
use kit::http::Json;
use kit::{ApiError, ApiResult};
use serde::Deserialize;
use token::AuthUser;

use crate::domain::{EmailMode, Preferences};
use crate::state::ApiContext;
use crate::store::settings;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/notifications/preferences", get(get_prefs).put(put_prefs))
}

async fn get_prefs(State(ctx): State<ApiContext>, user: AuthUser) -> ApiResult<Json<Preferences>> {
    Ok(Json(settings::preferences(ctx.db.pool(), user.id).await?))
}

/// Every field optional: an absent one keeps its current value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefsBody {
    email: Option<String>,
    web_push: Option<bool>,
    previews: Option<bool>,
    timezone: Option<String>,
}

/// An IANA time zone name as the tz database (chrono-tz, 2025 data) knows it, e.g.
/// `Europe/Berlin`; also its links (`US/Pacific`) and `UTC`.
pub fn valid_timezone(name: &str) -> bool {
    name.parse::<chrono_tz::Tz>().is_ok()
}

async fn put_prefs(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Json(body): Json<PrefsBody>,
) -> ApiResult<Json<Preferences>> {
    let mut errors = Vec::new();
    let email = match body.email.as_deref() {
        None => None,
        Some(s) => match EmailMode::parse(s) {
            Some(m) => Some(m),
            None => {
                errors.push(FieldError {
                    field: "email".to_owned(),
                    message: "must be off, instant or daily".to_owned(),
                });
                None
            }
        },
    };
    if let Some(tz) = body.timezone.as_deref()
        && !valid_timezone(tz)
    {
        errors.push(FieldError {
            field: "timezone".to_owned(),
            message: "must be an IANA time zone name such as Europe/Berlin".to_owned(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation_many(errors));
    }
    let mut tx = ctx.db.begin().await?;
    let mut p = settings::preferences(tx.conn(), user.id).await?;
    if let Some(e) = email {
        p.email = e;
    }
    if let Some(w) = body.web_push {
        p.web_push = w;
    }
    if let Some(v) = body.previews {
        p.previews = v;
    }
    if let Some(tz) = body.timezone {
        p.timezone = tz;
    }
    settings::put_preferences(tx.conn(), user.id, &p).await?;
    tx.commit().await?;
    Ok(Json(p))
}
