//! Outgoing mail, one sender for every service that mails (auth, notifications): SMTP
//! when `smtp_url` is configured, otherwise an RFC 5322 `.eml` file in
//! `<data dir>/outbox/` (so a laptop install needs no mail server).
//!
//! With the `testing` feature, [`testing`] has an SMTP sink and a parser for what it
//! (or the outbox) received.

#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Clone)]
pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    Files {
        dir: PathBuf,
        from: Mailbox,
    },
}

/// One mail: a text body, optionally an HTML alternative of it, and extra headers.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    /// When set, the mail is `multipart/alternative` (text first, HTML preferred).
    pub html: Option<String>,
    /// Extra headers such as `List-Unsubscribe`; names are ASCII without `:` or spaces.
    /// Values are encoded (RFC 2047) and folded, so they cannot inject headers.
    pub headers: Vec<(&'static str, String)>,
}

impl Mailer {
    pub fn new(smtp_url: Option<&str>, from: &str, outbox_dir: PathBuf) -> anyhow::Result<Self> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid mail_from: {e}"))?;
        match smtp_url.filter(|u| !u.trim().is_empty()) {
            Some(url) => Ok(Mailer::Smtp {
                transport: AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("invalid smtp_url: {e}"))?
                    .build(),
                from,
            }),
            None => Ok(Mailer::Files {
                dir: outbox_dir,
                from,
            }),
        }
    }

    /// A plain-text mail.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> anyhow::Result<()> {
        self.send_mail(&Mail {
            to: to.to_owned(),
            subject: subject.to_owned(),
            text: body,
            ..Mail::default()
        })
        .await
    }

    pub async fn send_mail(&self, mail: &Mail) -> anyhow::Result<()> {
        let from = match self {
            Mailer::Smtp { from, .. } | Mailer::Files { from, .. } => from.clone(),
        };
        let mut builder = Message::builder()
            .from(from)
            .to(mail.to.parse()?)
            .subject(mail.subject.as_str());
        for (name, value) in &mail.headers {
            let name = HeaderName::new_from_ascii((*name).to_owned())
                .map_err(|_| anyhow::anyhow!("invalid header name {name:?}"))?;
            builder = builder.raw_header(HeaderValue::new(name, value.clone()));
        }
        let message = match &mail.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                html.clone(),
            ))?,
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(mail.text.clone())?,
        };
        match self {
            Mailer::Smtp { transport, .. } => {
                transport.send(message).await?;
            }
            Mailer::Files { dir, .. } => {
                tokio::fs::create_dir_all(dir).await?;
                let path = dir.join(format!("{}.eml", uuid::Uuid::now_v7()));
                tokio::fs::write(&path, message.formatted()).await?;
                tracing::info!(path = %path.display(), "mail written to the outbox directory");
            }
        }
        Ok(())
    }
}
