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

/// A parsed W3C `traceparent`: version 00, 16-byte trace id, 8-byte parent span id, flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
    pub flags: u8,
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid per the spec.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        if !is_lower_hex(trace_id, 32) || !is_lower_hex(span_id, 16) || !is_lower_hex(flags, 2) {
            return None;
        }
        if trace_id.bytes().all(|b| b == b'0') || span_id.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(Self {
            trace_id: trace_id.to_owned(),
            span_id: span_id.to_owned(),
            flags: u8::from_str_radix(flags, 16).ok()?,
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

    #[test]
    fn parses_valid_and_rejects_invalid() {
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let tp = tp.expect("valid traceparent");
        assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.flags, 1);
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
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
