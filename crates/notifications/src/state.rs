//! Shared state of the handlers and event consumers.

use std::sync::Arc;

use axum::extract::FromRef;
use bus::outbox::Outbox;
use kit::db::Db;
use token::Verifier;

use crate::chat_client::ChatClient;
use crate::push::Vapid;

#[derive(Clone)]
pub struct ApiContext {
    pub db: Db,
    pub verifier: Arc<Verifier>,
    pub outbox: Outbox,
    pub chat: Arc<ChatClient>,
    pub vapid: Arc<Vapid>,
    /// http origins accepted for push endpoints (tests); others must be https.
    pub push_http_origins: Arc<Vec<String>>,
    /// Verifies the tokens of `POST /notifications/unsubscribe`.
    pub unsubscribe: Arc<crate::email::UnsubscribeKey>,
}

impl FromRef<ApiContext> for Arc<Verifier> {
    fn from_ref(ctx: &ApiContext) -> Self {
        ctx.verifier.clone()
    }
}
