//! The sender against the SMTP sink and the outbox: what lettre sends is what the parser
//! reads back (multipart text + HTML, extra headers, non-ASCII subjects and bodies).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mail::testing::{SmtpSink, parse};
use mail::{Mail, Mailer};

fn sample() -> Mail {
    Mail {
        to: "Bob <bob@example.com>".to_owned(),
        subject: "Grüße, Bob — 3 new".to_owned(),
        // A long line and a lone dot line: quoted-printable soft breaks, dot-stuffing.
        text: format!("Hello @bob,\n.\ncafé {}\nend\n", "x".repeat(120)),
        html: Some("<p>Hello @bob, caf&eacute; <b>ok</b></p>".to_owned()),
        headers: vec![
            (
                "List-Unsubscribe",
                "<https://colab.example/notifications/unsubscribe?token=abc.def>".to_owned(),
            ),
            (
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".to_owned(),
            ),
        ],
    }
}

fn check(m: &mail::testing::ParsedMail) {
    let want = sample();
    assert_eq!(
        m.header("Subject"),
        Some(want.subject.as_str()),
        "{}",
        m.raw
    );
    assert_eq!(
        m.header("List-Unsubscribe"),
        Some("<https://colab.example/notifications/unsubscribe?token=abc.def>")
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(m.header("From").unwrap().contains("no-reply@colab.example"));
    assert_eq!(m.text().replace("\r\n", "\n"), want.text, "{}", m.raw);
    assert_eq!(m.html().trim_end(), want.html.unwrap(), "{}", m.raw);
}

#[tokio::test]
async fn smtp_multipart_with_headers_round_trips() {
    let (sink, url) = SmtpSink::start().await;
    let mailer = Mailer::new(
        Some(&url),
        "IntelliColab <no-reply@colab.example>",
        "/nonexistent".into(),
    )
    .unwrap();
    mailer.send_mail(&sample()).await.unwrap();
    let m = sink.next_message(Duration::from_secs(10)).await;
    assert_eq!(m.envelope_from, "no-reply@colab.example");
    assert_eq!(m.envelope_to, vec!["bob@example.com".to_owned()]);
    check(&m);
    // A plain mail (auth's) is one text part.
    mailer
        .send("bob@example.com", "Reset", "Open the link.\n".to_owned())
        .await
        .unwrap();
    let m = sink.next_message(Duration::from_secs(10)).await;
    assert_eq!(m.text().replace("\r\n", "\n"), "Open the link.\n");
    assert_eq!(m.html, None);
    assert!(
        sink.try_next_message(Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn outbox_files_parse_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(
        None,
        "IntelliColab <no-reply@colab.example>",
        dir.path().join("outbox"),
    )
    .unwrap();
    mailer.send_mail(&sample()).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    check(&parse(&std::fs::read_to_string(&files[0]).unwrap()));
}

#[tokio::test]
async fn bad_header_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(None, "a@b.example", dir.path().to_path_buf()).unwrap();
    let mut m = sample();
    m.headers = vec![("Bad: Name", "x".to_owned())];
    assert!(mailer.send_mail(&m).await.is_err());
}
