//! `GET / PUT /notifications/rooms/{room_id}`: a member's level for a room. Members only:
//! chat answers whether the caller is one (404 `room_not_found` otherwise, as chat does
//! for rooms one cannot see).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use kit::http::{Json, Path};
use kit::{ApiError, ApiResult};
use serde::Deserialize;
use token::AuthUser;
use uuid::Uuid;

use crate::chat_client::Membership;
use crate::domain::{Level, RoomSetting};
use crate::state::ApiContext;
use crate::store::settings;

pub fn router() -> Router<ApiContext> {
    Router::new().route(
        "/notifications/rooms/{room_id}",
        get(get_room).put(put_room),
    )
}

fn room_not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        kit::error::code::ROOM_NOT_FOUND,
        "no such room, or you are not a member",
    )
}

async fn member(ctx: &ApiContext, room: Uuid, user: Uuid) -> ApiResult<Membership> {
    ctx.chat
        .membership(room, user)
        .await?
        .ok_or_else(room_not_found)
}

async fn get_room(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(room_id): Path<Uuid>,
) -> ApiResult<Json<RoomSetting>> {
    let m = member(&ctx, room_id, user.id).await?;
    let (level, muted_until) = settings::room_setting(ctx.db.pool(), user.id, room_id)
        .await?
        .unwrap_or((Level::default_for(&m.room_kind), None));
    Ok(Json(RoomSetting {
        room_id,
        level,
        muted_until,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomBody {
    level: Option<String>,
    /// RFC 3339 or null (not muted). Absent keeps the current value.
    #[serde(default, deserialize_with = "present")]
    muted_until: Option<Option<String>>,
}

/// Tells an absent field (None) from an explicit null (Some(None)).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn parse_time(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

async fn put_room(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(room_id): Path<Uuid>,
    Json(body): Json<RoomBody>,
) -> ApiResult<Json<RoomSetting>> {
    let level = match body.level.as_deref() {
        None => None,
        Some(s) => Some(
            Level::parse(s)
                .ok_or_else(|| ApiError::validation("level", "must be all, mentions or none"))?,
        ),
    };
    let muted_until = match body.muted_until {
        None => None,
        Some(None) => Some(None),
        Some(Some(s)) => {
            // "Until I unmute" is a far-future time (the client sends 9999-12-31).
            let t = parse_time(&s).ok_or_else(|| {
                ApiError::validation("muted_until", "must be an RFC 3339 time or null")
            })?;
            Some(Some(t))
        }
    };
    let m = member(&ctx, room_id, user.id).await?;
    let mut tx = ctx.db.begin().await?;
    let (old_level, old_mute) = settings::room_setting(tx.conn(), user.id, room_id)
        .await?
        .unwrap_or((Level::default_for(&m.room_kind), None));
    let setting = RoomSetting {
        room_id,
        level: level.unwrap_or(old_level),
        muted_until: muted_until.unwrap_or(old_mute),
    };
    settings::put_room_setting(tx.conn(), user.id, &setting).await?;
    tx.commit().await?;
    Ok(Json(setting))
}
