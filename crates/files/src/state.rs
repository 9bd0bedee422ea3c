//! Shared state of the handlers, the event consumer and the collector.

use std::sync::Arc;

use axum::extract::FromRef;
use kit::db::Db;
use token::Verifier;

use crate::access::Access;
use crate::media::DecodeLimits;
use crate::storage::Storage;

#[derive(Clone)]
pub struct ApiContext {
    pub db: Db,
    pub verifier: Arc<Verifier>,
    pub storage: Arc<Storage>,
    pub access: Arc<Access>,
    pub limits: Arc<Limits>,
}

/// The upload limits of [`crate::Config`].
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_upload_bytes: u64,
    pub quota_bytes: u64,
    pub decode: DecodeLimits,
    /// Where uploads are spooled while they arrive.
    pub spool_dir: std::path::PathBuf,
}

impl FromRef<ApiContext> for Arc<Verifier> {
    fn from_ref(ctx: &ApiContext) -> Self {
        ctx.verifier.clone()
    }
}
