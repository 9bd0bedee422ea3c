//! Notification mails (API.md "Notifications"): what an instant mail or a daily digest
//! says, in text and HTML, and the one-click unsubscribe token (RFC 8058) its
//! `List-Unsubscribe` header carries. The worker that sends them is [`worker`].
//!
//! Every user-controlled string (names, previews, room names) is HTML-escaped in the HTML
//! part; the greeting names only the recipient's username (`Hello @ana,`): a display name
//! is free text anyone can set, so it appears only as the actor of a notification.

pub mod worker;

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

use crate::domain::{Kind, Notification};
use crate::store::copies::Recipient;

/// Notifications listed in one mail; the rest are counted ("and 12 more"). A mail of a
/// few dozen entries is still read; the inbox has them all.
pub const MAX_LISTED: usize = 50;
/// Longest preview quoted in a mail, in characters (chat's previews are ≤ 140 already).
const PREVIEW_CHARS: usize = 140;

/// The HMAC key of unsubscribe tokens: configured (`notifications.unsubscribe_secret`),
/// else 32 random bytes generated on first start into `<data dir>/mail/unsubscribe.key`
/// (mode 0600), as the VAPID key. Instances of one deployment must share it.
pub struct UnsubscribeKey(hmac::Key);

/// Domain separation: a tag made for anything else with the same key never verifies.
const TOKEN_CONTEXT: &[u8] = b"intellicolab notifications unsubscribe v1:";

impl UnsubscribeKey {
    pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<UnsubscribeKey> {
        let secret = match configured.filter(|s| !s.trim().is_empty()) {
            Some(s) => {
                // 32 characters: 128+ bits even for a hex or base64 secret.
                anyhow::ensure!(
                    s.trim().len() >= 32,
                    "invalid configuration: notifications.unsubscribe_secret must have at least 32 characters"
                );
                s.trim().as_bytes().to_vec()
            }
            None => {
                let dir = data_dir.join("mail");
                let path = dir.join("unsubscribe.key");
                if path.exists() {
                    std::fs::read(&path)?
                } else {
                    std::fs::create_dir_all(&dir)?;
                    let mut key = [0u8; 32];
                    SystemRandom::new()
                        .fill(&mut key)
                        .map_err(|_| anyhow::anyhow!("no randomness for the unsubscribe key"))?;
                    crate::push::write_private(&path, &key)?;
                    tracing::info!(path = %path.display(), "generated the unsubscribe key");
                    key.to_vec()
                }
            }
        };
        Ok(UnsubscribeKey(hmac::Key::new(hmac::HMAC_SHA256, &secret)))
    }

    fn tag(&self, user: Uuid) -> hmac::Tag {
        let mut msg = TOKEN_CONTEXT.to_vec();
        msg.extend_from_slice(user.as_bytes());
        hmac::sign(&self.0, &msg)
    }

    /// `<user id>.<base64url HMAC-SHA-256>`: needs no table, cannot be forged, and
    /// stays valid (opting out twice is harmless).
    pub fn token(&self, user: Uuid) -> String {
        format!("{user}.{}", URL_SAFE_NO_PAD.encode(self.tag(user).as_ref()))
    }

    /// The user a token was made for; None when it is malformed or forged.
    pub fn verify(&self, token: &str) -> Option<Uuid> {
        let (user, tag) = token.split_once('.')?;
        let user = Uuid::parse_str(user).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut msg = TOKEN_CONTEXT.to_vec();
        msg.extend_from_slice(user.as_bytes());
        // Constant time.
        hmac::verify(&self.0, &msg, &tag).ok()?;
        Some(user)
    }
}

/// `&`, `<`, `>`, `"`, `'` as entities: safe in element content and quoted attributes.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a mail needs besides the notifications.
pub struct Context<'a> {
    /// Where people open the app (`notifications.public_url`), no trailing `/`.
    pub public_url: &'a str,
    pub recipient: &'a Recipient,
    /// Names of the actors (`user → identity`) and rooms (`room → name`) listed.
    pub actors: &'a HashMap<Uuid, Recipient>,
    pub rooms: &'a HashMap<Uuid, String>,
    /// The `previews` preference: false = no message text in mails.
    pub previews: bool,
    pub unsubscribe_url: &'a str,
}

/// Instant mail or daily digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Instant,
    Digest,
}

/// The web client's link to a message: its room opened around it.
pub fn message_link(public_url: &str, n: &Notification) -> String {
    format!(
        "{public_url}/#/rooms/{}?around={}&msg={}",
        n.room_id, n.seq, n.message_id
    )
}

/// "Ana (@ana)", "@ana", or "Someone" for an actor auth never described.
fn actor_name(actors: &HashMap<Uuid, Recipient>, id: Uuid) -> String {
    match actors.get(&id) {
        Some(r) if !r.display_name.is_empty() && !r.username.is_empty() => {
            if r.display_name == r.username {
                format!("@{}", r.username)
            } else {
                format!("{} (@{})", r.display_name, r.username)
            }
        }
        Some(r) if !r.username.is_empty() => format!("@{}", r.username),
        _ => "Someone".to_owned(),
    }
}

/// What happened, after the actor's name: "mentioned you in #general".
fn what(n: &Notification, rooms: &HashMap<Uuid, String>) -> String {
    let room = rooms
        .get(&n.room_id)
        .map(|r| format!("#{r}"))
        .unwrap_or_else(|| "a room".to_owned());
    match n.kind {
        Kind::Dm => "sent you a direct message".to_owned(),
        Kind::Mention => format!("mentioned you in {room}"),
        Kind::Reply => format!("replied to you in {room}"),
        Kind::Message => format!("posted in {room}"),
    }
}

fn preview(n: &Notification, previews: bool) -> Option<String> {
    (previews && !n.preview.is_empty()).then(|| n.preview.chars().take(PREVIEW_CHARS).collect())
}

/// Subject, text and HTML of a mail listing `items` (oldest first).
pub fn compose(style: Style, ctx: &Context<'_>, items: &[Notification]) -> mail::Mail {
    let n = items.len();
    let plural = if n == 1 { "" } else { "s" };
    let subject = match style {
        Style::Instant => format!("{n} new notification{plural} on IntelliColab"),
        Style::Digest => format!("Your IntelliColab digest: {n} unread notification{plural}"),
    };
    let greeting = if ctx.recipient.username.is_empty() {
        "Hello,".to_owned()
    } else {
        format!("Hello @{},", ctx.recipient.username)
    };
    let intro = match style {
        Style::Instant => "you have unread notifications:",
        Style::Digest => "here is what you have not read since your last digest:",
    };
    let settings = format!("{}/#/settings/notifications", ctx.public_url);
    let mut text = format!("{greeting}\n\n{intro}\n\n");
    let mut html = format!(
        "<!DOCTYPE html><html><body><p>{}</p><p>{}</p><ul>",
        escape_html(&greeting),
        escape_html(intro)
    );
    for item in items.iter().take(MAX_LISTED) {
        let actor = actor_name(ctx.actors, item.actor_id);
        let what = what(item, ctx.rooms);
        let link = message_link(ctx.public_url, item);
        text.push_str(&format!("- {actor} {what}"));
        html.push_str(&format!(
            "<li><a href=\"{}\">{} {}</a>",
            escape_html(&link),
            escape_html(&actor),
            escape_html(&what)
        ));
        if let Some(p) = preview(item, ctx.previews) {
            text.push_str(&format!(": \"{p}\""));
            html.push_str(&format!("<blockquote>{}</blockquote>", escape_html(&p)));
        }
        text.push_str(&format!("\n  {link}\n"));
        html.push_str("</li>");
    }
    html.push_str("</ul>");
    if n > MAX_LISTED {
        let more = format!("…and {} more in the app.", n - MAX_LISTED);
        text.push_str(&format!("{more}\n"));
        html.push_str(&format!("<p>{}</p>", escape_html(&more)));
    }
    let footer = "You get these mails because email notifications are on. Change them in \
                  your settings, or unsubscribe from notification mails:";
    text.push_str(&format!(
        "\n-- \n{footer}\nSettings: {settings}\nUnsubscribe: {}\n",
        ctx.unsubscribe_url
    ));
    html.push_str(&format!(
        "<hr><p>{}</p><p><a href=\"{}\">Settings</a> · <a href=\"{}\">Unsubscribe</a></p></body></html>",
        escape_html(footer),
        escape_html(&settings),
        escape_html(ctx.unsubscribe_url)
    ));
    mail::Mail {
        to: ctx.recipient.email.clone(),
        subject,
        text,
        html: Some(html),
        headers: vec![
            ("List-Unsubscribe", format!("<{}>", ctx.unsubscribe_url)),
            // RFC 8058: a POST with this body to the URL above opts out, no login.
            (
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".to_owned(),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let key = UnsubscribeKey::load(None, dir.path()).unwrap();
        let user = Uuid::now_v7();
        let t = key.token(user);
        assert_eq!(key.verify(&t), Some(user));
        // The same key file again (a restart) verifies the same token.
        let again = UnsubscribeKey::load(None, dir.path()).unwrap();
        assert_eq!(again.verify(&t), Some(user));
        // Another user's id with this tag, a truncated tag, another key: refused.
        let (_, tag) = t.split_once('.').unwrap();
        assert_eq!(key.verify(&format!("{}.{tag}", Uuid::now_v7())), None);
        assert_eq!(key.verify(&t[..t.len() - 2]), None);
        assert_eq!(key.verify("garbage"), None);
        let other = UnsubscribeKey::load(Some(&"x".repeat(32)), dir.path()).unwrap();
        assert_eq!(other.verify(&t), None);
        assert!(UnsubscribeKey::load(Some("short"), dir.path()).is_err());
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<b a="x">'&'</b>"#),
            "&lt;b a=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"
        );
    }
}
