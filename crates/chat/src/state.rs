use std::sync::Arc;

use axum::extract::FromRef;

use crate::fanout::Fanout;
use crate::ratelimit::RateLimiter;
use crate::users_client::UsersClient;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct ApiContext {
    pub db: kit::db::Db,
    pub verifier: Arc<token::Verifier>,
    pub config: Arc<crate::Config>,
    pub outbox: bus::outbox::Outbox,
    pub fanout: Fanout,
    /// Who is online (per-user subscriber index, local tracker, store).
    pub presence: Arc<crate::presence::Presence>,
    pub users: Arc<UsersClient>,
    /// Checks a send's `attachment_ids` with the files service.
    pub files: Arc<crate::files_client::FilesClient>,
    pub send_limit: Arc<RateLimiter>,
    /// Group commit of message sends.
    pub writer: crate::writer::Writer,
    /// Cancelled on shutdown: open WebSockets close with 1001.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl FromRef<ApiContext> for Arc<token::Verifier> {
    fn from_ref(ctx: &ApiContext) -> Self {
        ctx.verifier.clone()
    }
}
