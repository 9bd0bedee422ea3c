//! The notifications service's types as clients see them (API.md "Notifications").

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a recipient is told about a message. When several apply to one recipient only
/// one notification exists (one per recipient and message); the first of this order
/// wins: a DM is always `dm`, then `mention`, `reply`, and `message` (room level `all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Dm,
    Mention,
    Reply,
    Message,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dm => "dm",
            Kind::Mention => "mention",
            Kind::Reply => "reply",
            Kind::Message => "message",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "dm" => Some(Kind::Dm),
            "mention" => Some(Kind::Mention),
            "reply" => Some(Kind::Reply),
            "message" => Some(Kind::Message),
            _ => None,
        }
    }
}

/// A notification (`Notification` of API.md).
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub id: Uuid,
    pub kind: Kind,
    pub room_id: Uuid,
    pub message_id: Uuid,
    pub seq: i64,
    pub actor_id: Uuid,
    pub preview: String,
    #[serde(with = "kit::time::ser_rfc3339")]
    pub created_at: i64,
    #[serde(with = "kit::time::ser_rfc3339_opt")]
    pub read_at: Option<i64>,
}

/// A room's notification level for one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    All,
    Mentions,
    None,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::All => "all",
            Level::Mentions => "mentions",
            Level::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "all" => Some(Level::All),
            "mentions" => Some(Level::Mentions),
            "none" => Some(Level::None),
            _ => None,
        }
    }

    /// The level of a room nobody configured: everything in a DM (there is only one
    /// other person), mentions (and replies) in a channel.
    pub fn default_for(room_kind: &str) -> Level {
        if room_kind == "dm" {
            Level::All
        } else {
            Level::Mentions
        }
    }
}

/// `email` preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailMode {
    Off,
    Instant,
    Daily,
}

impl EmailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailMode::Off => "off",
            EmailMode::Instant => "instant",
            EmailMode::Daily => "daily",
        }
    }

    pub fn parse(s: &str) -> Option<EmailMode> {
        match s {
            "off" => Some(EmailMode::Off),
            "instant" => Some(EmailMode::Instant),
            "daily" => Some(EmailMode::Daily),
            _ => None,
        }
    }
}

/// `GET/PUT /notifications/preferences`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preferences {
    pub email: EmailMode,
    pub web_push: bool,
    pub previews: bool,
    pub timezone: String,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            email: EmailMode::Instant,
            web_push: true,
            previews: true,
            timezone: "UTC".to_owned(),
        }
    }
}

/// `GET/PUT /notifications/rooms/{room_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomSetting {
    pub room_id: Uuid,
    pub level: Level,
    #[serde(with = "kit::time::ser_rfc3339_opt")]
    pub muted_until: Option<i64>,
}
