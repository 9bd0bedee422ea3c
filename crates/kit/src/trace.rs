//! W3C trace context (`traceparent`) for requests, service-to-service calls and bus events.
//!
//! Every request span carries the `trace_id` of the incoming `traceparent` (the gateway
//! always sends one), so the logs of one user action can be joined across services in Loki
//! even when no trace backend runs. [`current_traceparent`] gives the context to pass on:
//! outgoing HTTP calls put it in their `traceparent` header and the outbox stores it in the
//! event envelope, so a consumer's span continues the producer's trace.
//!
//! With the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported
//! (see [`crate::telemetry`]) and the request span's parent is the incoming context.

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// A parsed W3C `traceparent`: 16-byte trace id, 8-byte parent span id, flags (parsed by
/// [`TraceParentRef::parse`]; the version is not kept, [`TraceParent::header_value`]
/// always writes `00`, the version this code knows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
    pub flags: u8,
}

/// The fields of a valid `traceparent`, borrowed from the header value: parsing
/// allocates nothing (the gateway parses one on every proxied request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParentRef<'a> {
    pub version: u8,
    /// 32 lower-case hex digits, not all zero.
    pub trace_id: &'a str,
    /// 16 lower-case hex digits, not all zero.
    pub parent_id: &'a str,
    pub flags: u8,
}

/// `version(2) "-" trace-id(32) "-" parent-id(16) "-" trace-flags(2)`.
const TRACEPARENT_LEN: usize = 55;

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Two lower-case hex digits as a byte.
fn hex_byte(b: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match b {
        [h, l] => Some((digit(*h)? << 4) | digit(*l)?),
        _ => None,
    }
}

/// A lower-case hex id of `len` digits that is not all zero.
fn id(s: &str, len: usize) -> Option<&str> {
    let b = s.as_bytes();
    (b.len() == len && is_lower_hex(b) && b.iter().any(|&c| c != b'0')).then_some(s)
}

impl<'a> TraceParentRef<'a> {
    /// The one `traceparent` rule of the workspace (W3C Trace Context §3.2, versioning
    /// §4.3): every field lower-case hex (upper case is invalid); version `ff` is invalid;
    /// version `00` is exactly 55 characters; a higher version may be longer, with a `-`
    /// after the 55th character, and only its first four fields are read; an all-zero
    /// trace id or parent id is invalid. Surrounding whitespace (optional whitespace
    /// around a header value) is ignored.
    pub fn parse(s: &'a str) -> Option<Self> {
        let s = s.trim_ascii();
        let b = s.as_bytes();
        if b.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex_byte(&b[0..2])?;
        let length_ok = match version {
            0xff => false,
            0x00 => b.len() == TRACEPARENT_LEN,
            _ => b.len() == TRACEPARENT_LEN || b[TRACEPARENT_LEN] == b'-',
        };
        if !length_ok || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        Some(Self {
            version,
            // In bounds and on character boundaries: the bytes around them are ASCII.
            trace_id: id(s.get(3..35)?, 32)?,
            parent_id: id(s.get(36..52)?, 16)?,
            flags: hex_byte(&b[53..55])?,
        })
    }
}

impl TraceParent {
    /// Parses a `traceparent` by the rule of [`TraceParentRef::parse`].
    pub fn parse(s: &str) -> Option<Self> {
        let tp = TraceParentRef::parse(s)?;
        Some(Self {
            trace_id: tp.trace_id.to_owned(),
            span_id: tp.parent_id.to_owned(),
            flags: tp.flags,
        })
    }

    /// A new trace (sampled), for work that did not come with a context.
    pub fn new_root() -> Self {
        Self {
            trace_id: uuid::Uuid::new_v4().simple().to_string(),
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// The same trace with a new span id: the context this process passes on.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            span_id: new_span_id(),
            flags: self.flags,
        }
    }

    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

fn new_span_id() -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.truncate(16);
    id
}

/// Runs `fut` with `ctx` as the current trace context (see [`current_traceparent`]).
pub async fn scope<F: Future>(ctx: TraceParent, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// The `traceparent` to send on with an outgoing call or event, if this task runs inside a
/// traced request or event handler.
pub fn current_traceparent() -> Option<String> {
    #[cfg(feature = "otlp")]
    if let Some(tp) = otel::current_span_traceparent() {
        return Some(tp);
    }
    CURRENT.try_with(|c| c.header_value()).ok()
}

/// The trace id of the current task's context.
pub fn current_trace_id() -> Option<String> {
    CURRENT.try_with(|c| c.trace_id.clone()).ok()
}

/// Makes `span` a child of the remote context `incoming` in the exported trace (no-op
/// without the `otlp` feature).
pub fn set_remote_parent(span: &tracing::Span, incoming: &TraceParent) {
    #[cfg(feature = "otlp")]
    otel::set_parent(span, incoming);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, incoming);
}

#[cfg(feature = "otlp")]
mod otel {
    use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
    use opentelemetry::trace::{SpanId, TraceId};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceParent;

    pub fn set_parent(span: &tracing::Span, incoming: &TraceParent) {
        let (Ok(trace_id), Ok(span_id)) = (
            TraceId::from_hex(&incoming.trace_id),
            SpanId::from_hex(&incoming.span_id),
        ) else {
            return;
        };
        let remote = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(incoming.flags),
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        let _ = span.set_parent(cx);
    }

    pub fn current_span_traceparent() -> Option<String> {
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    fn tp(version: &str, trace: &str, parent: &str, flags: &str) -> String {
        format!("{version}-{trace}-{parent}-{flags}")
    }

    #[test]
    fn version_00_is_exactly_55_characters() {
        let s = tp("00", TRACE, PARENT, "01");
        assert_eq!(s.len(), 55);
        assert_eq!(
            TraceParentRef::parse(&s),
            Some(TraceParentRef {
                version: 0,
                trace_id: TRACE,
                parent_id: PARENT,
                flags: 1,
            })
        );
        let owned = TraceParent::parse(&s).expect("valid traceparent");
        assert_eq!(owned.trace_id, TRACE);
        assert_eq!(owned.span_id, PARENT);
        assert_eq!(owned.flags, 1);
        assert_eq!(owned.header_value(), s);
        // Optional whitespace around a header value is not part of it.
        assert!(TraceParentRef::parse(&format!(" {s}\t")).is_some());
        // Longer or shorter is invalid for version 00, even with a dash after field four.
        for bad in [
            format!("{s}-extra"),
            format!("{s}-"),
            format!("{s}0"),
            s[..54].to_owned(),
            tp("00", TRACE, PARENT, "1"),
        ] {
            assert_eq!(TraceParentRef::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_higher_version_may_be_longer_and_its_first_four_fields_are_read() {
        for s in [
            tp("01", TRACE, PARENT, "01"),
            format!("{}-extra", tp("01", TRACE, PARENT, "01")),
            format!("{}-", tp("cc", TRACE, PARENT, "01")),
            format!("{}-what-ever-comes", tp("fe", TRACE, PARENT, "01")),
        ] {
            let parsed = TraceParentRef::parse(&s).unwrap_or_else(|| panic!("{s} refused"));
            assert_eq!(parsed.trace_id, TRACE, "{s}");
            assert_eq!(parsed.parent_id, PARENT, "{s}");
            assert_eq!(parsed.flags, 1, "{s}");
            assert!(parsed.version > 0);
            // Passed on as the version this code knows.
            let owned = TraceParent::parse(&s).expect("valid traceparent");
            assert_eq!(owned.header_value(), tp("00", TRACE, PARENT, "01"));
        }
        // Anything longer must continue with a dash.
        let s = format!("{}x", tp("01", TRACE, PARENT, "01"));
        assert_eq!(TraceParentRef::parse(&s), None);
    }

    #[test]
    fn version_ff_is_invalid() {
        assert_eq!(TraceParentRef::parse(&tp("ff", TRACE, PARENT, "01")), None);
        let longer = format!("{}-extra", tp("ff", TRACE, PARENT, "01"));
        assert_eq!(TraceParentRef::parse(&longer), None);
    }

    #[test]
    fn all_zero_ids_are_invalid() {
        let zero_trace = "0".repeat(32);
        let zero_parent = "0".repeat(16);
        for version in ["00", "01"] {
            let s = tp(version, &zero_trace, PARENT, "01");
            assert_eq!(TraceParentRef::parse(&s), None, "{s}");
            let s = tp(version, TRACE, &zero_parent, "01");
            assert_eq!(TraceParentRef::parse(&s), None, "{s}");
        }
        // One non-zero digit is enough.
        let s = tp(
            "00",
            &format!("{}1", "0".repeat(31)),
            "0000000000000001",
            "00",
        );
        assert!(TraceParentRef::parse(&s).is_some());
    }

    #[test]
    fn upper_case_is_invalid_in_every_field() {
        for s in [
            tp("00", &TRACE.to_ascii_uppercase(), PARENT, "01"),
            tp("00", TRACE, &PARENT.to_ascii_uppercase(), "01"),
            tp("00", TRACE, PARENT, "0A"),
            tp("0A", TRACE, PARENT, "01"),
            format!("{}-extra", tp("0B", TRACE, PARENT, "01")),
        ] {
            assert_eq!(TraceParentRef::parse(&s), None, "{s}");
            assert_eq!(TraceParent::parse(&s), None, "{s}");
        }
        assert!(TraceParentRef::parse(&tp("00", TRACE, PARENT, "0a")).is_some());
    }

    #[test]
    fn malformed_values_are_invalid() {
        let ok = tp("00", TRACE, PARENT, "01");
        let mut bad = vec![
            String::new(),
            "garbage".to_owned(),
            ok.replace('-', "_"),
            tp("00", &TRACE[..31], &format!("{PARENT}0"), "01"),
            tp("00", TRACE, "00f067aa0ba902bx", "01"),
            tp("00", TRACE, PARENT, "0g"),
            tp("0", TRACE, PARENT, "001"),
        ];
        // A non-ASCII character in any position must not panic the parser (a higher
        // version may be longer than 55 bytes, so the fields are sliced by position).
        for base in [ok.clone(), tp("01", TRACE, PARENT, "01")] {
            for i in 0..base.len() {
                let mut s = base.clone();
                s.replace_range(i..=i, "é");
                bad.push(s);
            }
        }
        for s in bad {
            assert_eq!(TraceParentRef::parse(&s), None, "{s}");
        }
    }

    #[test]
    fn child_keeps_trace_and_changes_span() {
        let root = TraceParent::new_root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert!(TraceParent::parse(&child.header_value()).is_some());
    }

    #[tokio::test]
    async fn current_context_is_task_scoped() {
        assert_eq!(current_traceparent(), None);
        let root = TraceParent::new_root();
        let expected = root.header_value();
        let seen = scope(root, async { current_traceparent() }).await;
        assert_eq!(seen, Some(expected));
    }
}
