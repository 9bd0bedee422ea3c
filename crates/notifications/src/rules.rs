//! Who is told about a message, and how: pure functions, so every rule is unit-tested
//! here and the consumer ([`crate::events`]) only gathers the facts and stores the result.
//!
//! Rules (API.md "Notifications"): `dm` — any message from the other member of a DM;
//! `mention` — the recipient is among the resolved mentions (chat resolves `@room` to
//! every member); `reply` — a reply to the recipient's message or a reply in the thread
//! the recipient started; `message` — any message in a room whose level the recipient
//! set to `all`. Never the sender; never a sender the recipient blocks; never a room
//! at level `none` or muted until a later time. Level `mentions` admits `mention` and
//! `reply` only (a reply is addressed to the recipient as much as a mention is).
//!
//! `message` in channels: chat's events do not carry the member list, so the candidates
//! are the recipients who set the room's level to `all` explicitly (a `room_settings`
//! row: only members can set one). Nobody gets `message` in a channel by default.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::domain::{Kind, Level};

/// What the consumer knows of one candidate recipient for one room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// The level the recipient set for the room (None: the room kind's default).
    pub level: Option<Level>,
    /// Epoch ms until which the room is muted, if set.
    pub muted_until: Option<i64>,
    /// The recipient blocks the sender.
    pub blocks_sender: bool,
}

/// The parts of a message event that decide the candidates.
#[derive(Debug, Clone, Default)]
pub struct Addressing<'a> {
    pub sender_id: Uuid,
    pub room_kind: &'a str,
    pub mentioned_user_ids: &'a [Uuid],
    pub reply_to_sender_id: Option<Uuid>,
    pub thread_root_sender_id: Option<Uuid>,
    /// DM: the other member.
    pub recipient_ids: &'a [Uuid],
    /// Channels: who set the room's level to `all`.
    pub level_all: &'a [Uuid],
}

/// Every candidate (never the sender) with every reason that applies, in [`Kind`] order.
pub fn candidates(a: &Addressing<'_>) -> BTreeMap<Uuid, Vec<Kind>> {
    let mut out: BTreeMap<Uuid, Vec<Kind>> = BTreeMap::new();
    let mut add = |user: Uuid, kind: Kind| {
        if user != a.sender_id {
            let reasons = out.entry(user).or_default();
            if !reasons.contains(&kind) {
                reasons.push(kind);
            }
        }
    };
    if a.room_kind == "dm" {
        for &u in a.recipient_ids {
            add(u, Kind::Dm);
        }
    }
    for &u in a.mentioned_user_ids {
        add(u, Kind::Mention);
    }
    for u in [a.reply_to_sender_id, a.thread_root_sender_id]
        .into_iter()
        .flatten()
    {
        add(u, Kind::Reply);
    }
    if a.room_kind != "dm" {
        for &u in a.level_all {
            add(u, Kind::Message);
        }
    }
    for reasons in out.values_mut() {
        reasons.sort();
    }
    out
}

/// The kind of the one notification `reasons` (sorted) give under `facts`, or None.
pub fn choose(reasons: &[Kind], room_kind: &str, facts: &Facts, now_ms: i64) -> Option<Kind> {
    admitted(reasons, room_kind, facts, now_ms).next()
}

/// Every reason of `reasons` (sorted) that `facts` admit, in order: the first is the
/// notification's kind, the next what a `mention` falls back to when an edit removes it.
pub fn admitted<'a>(
    reasons: &'a [Kind],
    room_kind: &str,
    facts: &Facts,
    now_ms: i64,
) -> impl Iterator<Item = Kind> + 'a {
    let silenced = facts.blocks_sender || facts.muted_until.is_some_and(|t| t > now_ms);
    let level = facts.level.unwrap_or_else(|| Level::default_for(room_kind));
    reasons.iter().copied().filter(move |k| {
        !silenced
            && match level {
                Level::None => false,
                Level::Mentions => matches!(k, Kind::Mention | Kind::Reply),
                Level::All => true,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn channel<'a>(mentioned: &'a [Uuid], level_all: &'a [Uuid]) -> Addressing<'a> {
        Addressing {
            sender_id: id(1),
            room_kind: "channel",
            mentioned_user_ids: mentioned,
            level_all,
            ..Default::default()
        }
    }

    #[test]
    fn never_the_sender() {
        let m = [id(1), id(2)];
        let c = candidates(&channel(&m, &[id(1)]));
        assert_eq!(c.keys().copied().collect::<Vec<_>>(), [id(2)]);
    }

    #[test]
    fn reasons_are_merged_in_kind_order() {
        let m = [id(2)];
        let all = [id(2), id(3)];
        let mut a = channel(&m, &all);
        a.reply_to_sender_id = Some(id(2));
        a.thread_root_sender_id = Some(id(4));
        let c = candidates(&a);
        assert_eq!(c[&id(2)], [Kind::Mention, Kind::Reply, Kind::Message]);
        assert_eq!(c[&id(3)], [Kind::Message]);
        assert_eq!(c[&id(4)], [Kind::Reply]);
    }

    #[test]
    fn dm_recipients_and_no_message_kind_in_dms() {
        let r = [id(2)];
        let a = Addressing {
            sender_id: id(1),
            room_kind: "dm",
            recipient_ids: &r,
            level_all: &r,
            ..Default::default()
        };
        assert_eq!(candidates(&a)[&id(2)], [Kind::Dm]);
    }

    #[test]
    fn levels_mutes_and_blocks() {
        let now = 1_000;
        let f = Facts::default();
        // Channel default: mentions and replies, not plain messages.
        assert_eq!(
            choose(&[Kind::Mention], "channel", &f, now),
            Some(Kind::Mention)
        );
        assert_eq!(
            choose(&[Kind::Reply], "channel", &f, now),
            Some(Kind::Reply)
        );
        assert_eq!(choose(&[Kind::Message], "channel", &f, now), None);
        // DM default: all.
        assert_eq!(choose(&[Kind::Dm], "dm", &f, now), Some(Kind::Dm));
        // A DM at `mentions` still reports a mention in it.
        let mentions = Facts {
            level: Some(Level::Mentions),
            ..f
        };
        assert_eq!(choose(&[Kind::Dm], "dm", &mentions, now), None);
        assert_eq!(
            choose(&[Kind::Dm, Kind::Mention], "dm", &mentions, now),
            Some(Kind::Mention)
        );
        let none = Facts {
            level: Some(Level::None),
            ..f
        };
        assert_eq!(choose(&[Kind::Mention], "channel", &none, now), None);
        let all = Facts {
            level: Some(Level::All),
            ..f
        };
        assert_eq!(
            choose(&[Kind::Message], "channel", &all, now),
            Some(Kind::Message)
        );
        let muted = Facts {
            muted_until: Some(now + 1),
            ..all
        };
        assert_eq!(choose(&[Kind::Mention], "channel", &muted, now), None);
        let mute_over = Facts {
            muted_until: Some(now),
            ..all
        };
        assert_eq!(
            choose(&[Kind::Mention], "channel", &mute_over, now),
            Some(Kind::Mention)
        );
        let blocked = Facts {
            blocks_sender: true,
            ..all
        };
        assert_eq!(choose(&[Kind::Dm], "dm", &blocked, now), None);
    }
}
