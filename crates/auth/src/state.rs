use std::sync::Arc;

use axum::extract::FromRef;

use crate::hashing::Hasher;
use mail::Mailer;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct ApiContext {
    pub db: kit::db::Db,
    pub keys: Arc<token::KeySet>,
    pub verifier: Arc<token::Verifier>,
    pub config: Arc<crate::Config>,
    pub outbox: bus::outbox::Outbox,
    pub hasher: Hasher,
    pub mailer: Arc<Mailer>,
    pub relying_party: Arc<crate::webauthn::RelyingParty>,
}

impl FromRef<ApiContext> for Arc<token::Verifier> {
    fn from_ref(ctx: &ApiContext) -> Self {
        ctx.verifier.clone()
    }
}
