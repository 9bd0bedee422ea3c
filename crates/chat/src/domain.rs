//! Chat types as the API shows them, and the parsing of client input.

use kit::ApiError;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

pub const MAX_BODY_CHARS: usize = 4000;
pub const MAX_NAME_CHARS: usize = 80;
pub const MAX_TOPIC_CHARS: usize = 500;
pub const MAX_CLIENT_MSG_ID_CHARS: usize = 128;
/// Distinct emoji on one message (API.md v1.1): keeps a message's reaction row short
/// enough to render, and `attach`'s per-page aggregate small (≤ 20 rows a message).
pub const MAX_REACTIONS_PER_MESSAGE: i64 = 20;
/// Pinned messages per room (API.md v1.1): the pin list is one unpaginated page.
pub const MAX_PINS_PER_ROOM: i64 = 50;

mod emoji;
pub use emoji::parse_emoji;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
    pub fn can_moderate(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// A room as stored (plus its member count).
#[derive(Clone, Debug, Serialize)]
pub struct Room {
    pub id: Uuid,
    pub kind: String,
    pub name: String,
    pub topic: String,
    pub visibility: String,
    pub owner_id: Uuid,
    #[serde(serialize_with = "kit::time::ser_rfc3339::serialize")]
    pub created_at: i64,
    pub member_count: i64,
    pub last_seq: i64,
}

impl Room {
    pub fn is_public(&self) -> bool {
        self.visibility == "public"
    }
    pub fn is_dm(&self) -> bool {
        self.kind == "dm"
    }
}

/// A room in the caller's room list.
#[derive(Serialize)]
pub struct MyRoom {
    #[serde(flatten)]
    pub room: Room,
    pub role: Role,
    pub read_seq: i64,
    pub unread_count: i64,
    pub last_message: Option<Message>,
}

/// The sender of a deleted account's messages. They stay (API.md: shown with
/// `sender_id: null`, a "deleted user"); storage keeps the nil uuid instead of making
/// `messages.sender_id` nullable. That needs no table rebuild on SQLite (its `ALTER
/// TABLE` cannot drop NOT NULL) and leaves every comparison in the code as it is: no
/// caller's id is ever nil, so "is the caller the sender" stays false. Only the wire
/// form changes, in one place: [`sender_id`].
pub const DELETED_SENDER: Uuid = Uuid::nil();

/// `Message::sender_id` on the wire: `null` for [`DELETED_SENDER`] (and back).
mod sender_id {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        if id.is_nil() {
            s.serialize_none()
        } else {
            s.serialize_some(id)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        Ok(Option::<Uuid>::deserialize(d)?.unwrap_or(super::DELETED_SENDER))
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Message {
    pub id: Uuid,
    pub room_id: Uuid,
    pub seq: i64,
    /// `null` for a deleted account's messages (stored as [`DELETED_SENDER`]).
    #[serde(with = "sender_id")]
    pub sender_id: Uuid,
    pub body: String,
    pub client_msg_id: Option<String>,
    pub reply_to: Option<Uuid>,
    pub created_at: String,
    pub edited_at: Option<String>,
    pub deleted: bool,
    /// Users mentioned (`@username` of members, `@room` from the owner/admins), resolved
    /// at send and at each edit; never the sender.
    #[serde(default)]
    pub mentions: Vec<Uuid>,
    /// The top-level message whose thread this one is in (None: top-level).
    #[serde(default)]
    pub thread_root_id: Option<Uuid>,
    /// On a thread root: its replies so far (tombstones included) and the newest's time.
    #[serde(default)]
    pub reply_count: i64,
    #[serde(default)]
    pub last_reply_at: Option<String>,
    /// `[{emoji, count, me}]` by first reaction time (v1.1; filled by
    /// `store::reactions::attach`, empty in stored event payloads of v1).
    #[serde(default)]
    pub reactions: Vec<ReactionCount>,
    /// v1.1: `messages.pinned_at IS NOT NULL`.
    #[serde(default)]
    pub pinned: bool,
}

impl Message {
    /// The message as room events carry it: reactions without the per-caller `me`.
    pub fn for_event(&self) -> Message {
        let mut m = self.clone();
        for r in &mut m.reactions {
            r.me = None;
        }
        m
    }
}

/// One emoji's reactions on a message. `me` (did the caller react) is set on HTTP
/// responses and absent from WebSocket events.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ReactionCount {
    pub emoji: String,
    pub count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub me: Option<bool>,
}

#[derive(Serialize)]
pub struct Member {
    pub user_id: Uuid,
    pub role: Role,
    #[serde(serialize_with = "kit::time::ser_rfc3339::serialize")]
    pub joined_at: i64,
}

pub mod kinds {
    pub const MESSAGE_CREATED: &str = "message.created";
    pub const MESSAGE_UPDATED: &str = "message.updated";
    pub const MESSAGE_DELETED: &str = "message.deleted";
    pub const MEMBER_JOINED: &str = "member.joined";
    pub const MEMBER_LEFT: &str = "member.left";
    pub const MEMBER_REMOVED: &str = "member.removed";
    /// Added to the contract's kinds: a member's role changed (payload `user_id`, `role`).
    pub const MEMBER_ROLE_CHANGED: &str = "member.role_changed";
    /// v1.1, payload `{message_id, emoji, user_id}`.
    pub const REACTION_ADDED: &str = "reaction.added";
    pub const REACTION_REMOVED: &str = "reaction.removed";
    /// v1.1, payload `{message_id, user_id}`.
    pub const MESSAGE_PINNED: &str = "message.pinned";
    pub const MESSAGE_UNPINNED: &str = "message.unpinned";
}

/// One entry of a room's event log. `payload` is an object merged into the wire form.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct RoomEvent {
    pub room_id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub created_at: i64,
    pub payload: Value,
}

impl RoomEvent {
    /// `{room_id, seq, kind, created_at, ...payload}` (API.md `RoomEvent`).
    pub fn to_wire(&self) -> Value {
        let mut map = match &self.payload {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        map.insert("room_id".into(), Value::String(self.room_id.to_string()));
        map.insert("seq".into(), Value::from(self.seq));
        map.insert("kind".into(), Value::String(self.kind.clone()));
        map.insert(
            "created_at".into(),
            Value::String(kit::time::rfc3339(self.created_at)),
        );
        Value::Object(map)
    }

    /// The WebSocket frame carrying this event.
    pub fn to_frame(&self) -> String {
        serde_json::json!({
            "type": "event",
            "room_id": self.room_id,
            "seq": self.seq,
            "event": self.to_wire(),
        })
        .to_string()
    }

    /// The member a membership event is about.
    pub fn member(&self) -> Option<Uuid> {
        self.payload
            .get("user_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    }
}

/// Most distinct `@username`s one body resolves (a body of 4,000 characters could name
/// ~1,000; nobody means to ping that many one by one, and it bounds the look-up query).
pub const MAX_MENTIONED_NAMES: usize = 50;

/// What a body mentions before resolution against the room's members.
#[derive(Debug, Default, PartialEq)]
pub struct MentionTokens {
    /// Lower-cased usernames, first occurrence order, without duplicates.
    pub usernames: Vec<String>,
    /// `@room` appeared (it counts only when the sender is the owner or an admin).
    pub room: bool,
}

/// Finds `@username` (3–32 of `a-z 0-9 _ .`, case-insensitive, as usernames are) and
/// `@room` at a word start: the `@` begins the body or follows a character that cannot be
/// part of a word or an address (so `bob@example.com` mentions nobody). A trailing `.`
/// ends the sentence, not the name (`thanks @alice.`).
pub fn mention_tokens(body: &str) -> MentionTokens {
    let mut out = MentionTokens::default();
    let chars: Vec<char> = body.chars().collect();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut i = 0;
    while i < chars.len() {
        let at_word_start = i == 0 || {
            let p = chars[i - 1];
            !(p.is_alphanumeric() || p == '_' || p == '.' || p == '@')
        };
        if chars[i] != '@' || !at_word_start {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < chars.len() && is_name(chars[end]) {
            end += 1;
        }
        i = end.max(start);
        // `@zoë`: a name cannot continue with a letter usernames do not have.
        if chars.get(end).is_some_and(|c| c.is_alphanumeric()) {
            continue;
        }
        let name: String = chars[start..end].iter().collect::<String>().to_lowercase();
        let name = name.trim_end_matches('.');
        if name == "room" {
            out.room = true;
        } else if (3..=32).contains(&name.len())
            && !out.usernames.iter().any(|n| n == name)
            && out.usernames.len() < MAX_MENTIONED_NAMES
        {
            out.usernames.push(name.to_owned());
        }
    }
    out
}

/// The first 140 characters of a body, for events that notify without the whole text.
pub fn preview(body: &str) -> String {
    const PREVIEW_CHARS: usize = 140;
    match body.char_indices().nth(PREVIEW_CHARS) {
        None => body.to_owned(),
        Some((cut, _)) => format!("{}…", &body[..cut]),
    }
}

/// Trims and checks a message body: 1–4000 Unicode characters, no control characters
/// but line feeds and tabs (a NUL truncates the text in C clients and some databases).
pub fn parse_body(raw: &str) -> Result<String, ApiError> {
    let body = raw.trim();
    let n = body.chars().count();
    if n == 0 {
        return Err(ApiError::validation("body", "must not be empty"));
    }
    if kit::text::has_control(body, true) {
        return Err(ApiError::validation(
            "body",
            "must not contain control characters other than line feeds and tabs",
        ));
    }
    if n > MAX_BODY_CHARS {
        return Err(ApiError::validation(
            "body",
            format!("must be at most {MAX_BODY_CHARS} characters"),
        ));
    }
    Ok(body.to_owned())
}

pub fn parse_client_msg_id(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw {
        None => Ok(None),
        Some(s) => {
            let n = s.chars().count();
            if n == 0 || n > MAX_CLIENT_MSG_ID_CHARS || s.chars().any(char::is_control) {
                Err(ApiError::validation(
                    "client_msg_id",
                    format!("must be 1–{MAX_CLIENT_MSG_ID_CHARS} printable characters"),
                ))
            } else {
                Ok(Some(s.to_owned()))
            }
        }
    }
}

pub fn parse_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || !kit::text::is_clean_label(name) {
        return Err(ApiError::validation(
            "name",
            format!(
                "must be 1–{MAX_NAME_CHARS} printable characters, without bidirectional overrides"
            ),
        ));
    }
    Ok(name.to_owned())
}

/// A topic may span lines (line feeds, tabs), but has no other control characters and no
/// bidirectional overrides or isolates.
pub fn parse_topic(raw: Option<&str>) -> Result<String, ApiError> {
    let topic = raw.unwrap_or("").trim();
    if topic.chars().count() > MAX_TOPIC_CHARS {
        return Err(ApiError::validation(
            "topic",
            format!("must be at most {MAX_TOPIC_CHARS} characters"),
        ));
    }
    if kit::text::has_control(topic, true) || topic.chars().any(kit::text::is_bidi_control) {
        return Err(ApiError::validation(
            "topic",
            "must not contain control characters (but line feeds and tabs) or bidirectional overrides",
        ));
    }
    Ok(topic.to_owned())
}

pub fn parse_visibility(raw: &str) -> Result<&'static str, ApiError> {
    match raw {
        "public" => Ok("public"),
        "private" => Ok("private"),
        _ => Err(ApiError::validation(
            "visibility",
            "must be \"public\" or \"private\"",
        )),
    }
}

/// `limit` of a page: default 50, 1–100.
pub fn parse_limit(raw: Option<i64>) -> Result<i64, ApiError> {
    match raw {
        None => Ok(50),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation("limit", "must be between 1 and 100")),
    }
}

/// The key that makes a DM unique per pair, whoever creates it.
pub fn dm_key(a: Uuid, b: Uuid) -> String {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    format!("{lo}|{hi}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_trimmed_and_counted_in_chars() {
        assert_eq!(parse_body("  hi \n").unwrap(), "hi");
        assert!(parse_body("   ").is_err());
        assert!(parse_body(&"é".repeat(4000)).is_ok());
        assert!(parse_body(&"é".repeat(4001)).is_err());
    }

    #[test]
    fn controls_and_bidi_overrides_are_refused() {
        assert!(parse_body("a\u{0}b").is_err());
        assert!(parse_body("a\u{7}b").is_err());
        assert!(parse_body("a\u{7f}b").is_err());
        assert!(parse_body("a\u{85}b").is_err());
        assert!(parse_body("a\rb").is_err());
        assert_eq!(parse_body("a\r\nb\n\tc").unwrap(), "a\r\nb\n\tc");
        // Bodies may carry bidi controls (right-to-left text); names and topics may not.
        assert!(parse_body("\u{202E}abc").is_ok());
        for bad in [
            "\u{202A}x",
            "x\u{202E}",
            "\u{2066}x",
            "x\u{2069}",
            "a\nb",
            "a\u{0}",
        ] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
        assert!(parse_name("שלום world").is_ok());
        assert!(parse_topic(Some("line\nline")).is_ok());
        assert!(parse_topic(Some("x\u{2067}y")).is_err());
        assert!(parse_topic(Some("x\u{1b}[31m")).is_err());
    }

    #[test]
    fn mentions_at_word_starts_only() {
        let t = mention_tokens("hi @Alice and @bob_2, also @alice again; mail bob@example.com");
        assert_eq!(t.usernames, vec!["alice", "bob_2"]);
        assert!(!t.room);
        let t = mention_tokens("@room: thanks @carol. (@dave) @x @ab @abc");
        assert!(t.room);
        assert_eq!(t.usernames, vec!["carol", "dave", "abc"]);
        assert_eq!(
            mention_tokens("@@alice a@bob _@carol é@dave").usernames,
            Vec::<String>::new()
        );
        assert_eq!(
            mention_tokens("«@émile» @zoë").usernames,
            Vec::<String>::new()
        );
        assert_eq!(
            mention_tokens("(@Ünïcode) @ok.name.").usernames,
            vec!["ok.name"]
        );
        assert!(mention_tokens("@alicé @zoë").usernames.is_empty());
        let long = format!("@{}", "a".repeat(33));
        assert!(mention_tokens(&long).usernames.is_empty());
        let many: String = (0..80).map(|i| format!("@user{i} ")).collect();
        assert_eq!(mention_tokens(&many).usernames.len(), MAX_MENTIONED_NAMES);
    }

    #[test]
    fn preview_cuts_at_140_characters() {
        assert_eq!(preview("short"), "short");
        let long = "é".repeat(200);
        let p = preview(&long);
        assert_eq!(p.chars().count(), 141);
        assert!(p.ends_with('…'));
        assert_eq!(preview(&"x".repeat(140)), "x".repeat(140));
    }

    #[test]
    fn dm_key_is_symmetric() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(dm_key(a, b), dm_key(b, a));
    }

    #[test]
    fn wire_event_merges_payload() {
        let e = RoomEvent {
            room_id: Uuid::nil(),
            seq: 3,
            kind: kinds::MEMBER_JOINED.into(),
            created_at: 0,
            payload: serde_json::json!({"user_id": Uuid::nil()}),
        };
        let w = e.to_wire();
        assert_eq!(w["seq"], 3);
        assert_eq!(w["kind"], "member.joined");
        assert_eq!(w["user_id"], Uuid::nil().to_string());
        assert_eq!(e.member(), Some(Uuid::nil()));
    }
}
