//! `POST /files?filename=` (raw bytes, or `multipart/form-data` with one `file` part) and
//! `DELETE /files/{id}`.
//!
//! An upload is streamed: each chunk is hashed (SHA-256), counted against the size limit
//! and written to a spool file as it arrives, so memory stays at a chunk per upload
//! whatever its size, and the 413 comes as soon as the limit is crossed — at once when
//! `Content-Length` already says so. Before any byte is read, the upload reserves its
//! size (`Content-Length`, or the limit when unknown) against the uploader's quota, so
//! concurrent uploads cannot overshoot it together; the reservation ends in the
//! transaction that records the file, or when the upload fails.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::routing::post;
use futures::StreamExt;
use kit::error::code;
use kit::http::{Json, Path, Query};
use kit::{ApiError, ApiResult};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use token::AuthUser;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::access::not_found;
use crate::domain::{FileView, StoredFile, clean_filename};
use crate::events::delete_objects;
use crate::media::{self, MediaError};
use crate::sniff::{self, HEAD_BYTES};
use crate::state::ApiContext;
use crate::storage;
use crate::store::{attachments, files, quota};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/files", post(upload))
        .route("/files/{id}", axum::routing::delete(delete_file))
}

/// Room for the multipart envelope around the file part (boundaries, part headers, small
/// extra fields): 64 KiB, far above what browsers send (a few hundred bytes).
pub const MULTIPART_SLACK: u64 = 64 * 1024;

/// A reservation outlives a crashed upload by this much at most (then it stops counting
/// against the quota): an hour covers a 25 MiB upload at 60 kbit/s.
const RESERVATION_TTL_MS: i64 = 3_600_000;

#[derive(Debug, Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code::PAYLOAD_TOO_LARGE,
        format!("uploads are limited to {max} bytes"),
    )
}

fn quota_exceeded(quota: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code::QUOTA_EXCEEDED,
        format!("this upload would take your files over your quota of {quota} bytes"),
    )
}

fn unreadable() -> ApiError {
    ApiError::bad_request(code::MALFORMED_BODY, "the request body could not be read")
}

/// Ends the quota reservation if the upload did not (a failure, or the client going away
/// and the handler being dropped mid-stream).
struct Reservation {
    db: kit::db::Db,
    id: Uuid,
    armed: bool,
}

impl Reservation {
    async fn release(mut self) {
        self.armed = false;
        release(&self.db, self.id).await;
    }
}

async fn release(db: &kit::db::Db, id: Uuid) {
    let r = async {
        let mut tx = db.begin().await?;
        quota::release(tx.conn(), id).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = r {
        // It stops counting when it expires.
        tracing::warn!(error = %e, "quota reservation not released");
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.armed
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (db, id) = (self.db.clone(), self.id);
            rt.spawn(async move { release(&db, id).await });
        }
    }
}

/// The upload on its way to the spool file.
struct Spool {
    tmp: tempfile::NamedTempFile,
    file: tokio::fs::File,
    hasher: Sha256,
    head: Vec<u8>,
    size: u64,
    max: u64,
}

impl Spool {
    fn new(dir: &std::path::Path, max: u64) -> ApiResult<Spool> {
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(ApiError::internal)?;
        let file = tmp.reopen().map_err(ApiError::internal)?;
        Ok(Spool {
            tmp,
            file: tokio::fs::File::from_std(file),
            hasher: Sha256::new(),
            head: Vec::with_capacity(HEAD_BYTES),
            size: 0,
            max,
        })
    }

    async fn push(&mut self, chunk: &[u8]) -> ApiResult<()> {
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(too_large(self.max));
        }
        self.hasher.update(chunk);
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.file.write_all(chunk).await.map_err(ApiError::internal)
    }
}

/// What arrived: the spooled bytes and the name to store.
struct Received {
    spool: Spool,
    filename: String,
}

async fn receive_raw(
    ctx: &ApiContext,
    req: Request,
    filename: Option<String>,
) -> ApiResult<Received> {
    let filename = filename.filter(|f| !f.trim().is_empty()).ok_or_else(|| {
        ApiError::validation("filename", "the filename query parameter is required")
    })?;
    let mut spool = Spool::new(&ctx.limits.spool_dir, ctx.limits.max_upload_bytes)?;
    let mut body = req.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        spool.push(&chunk.map_err(|_| unreadable())?).await?;
    }
    Ok(Received {
        spool,
        filename: clean_filename(&filename),
    })
}

async fn receive_multipart(
    ctx: &ApiContext,
    req: Request,
    boundary: String,
    filename: Option<String>,
) -> ApiResult<Received> {
    let max = ctx.limits.max_upload_bytes;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(max + MULTIPART_SLACK)
            .per_field(max + 1),
    );
    let body = req.into_body().into_data_stream();
    let mut mp = multer::Multipart::with_constraints(body, boundary, constraints);
    let multipart_err = |e: multer::Error| match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            too_large(max)
        }
        multer::Error::StreamReadFailed(_) => unreadable(),
        other => ApiError::bad_request(code::MALFORMED_BODY, format!("multipart body: {other}")),
    };
    let mut received: Option<Received> = None;
    while let Some(mut field) = mp.next_field().await.map_err(multipart_err)? {
        if field.name() != Some("file") {
            // Other fields are read and ignored (bounded by the whole-stream limit).
            while field.chunk().await.map_err(multipart_err)?.is_some() {}
            continue;
        }
        if received.is_some() {
            return Err(ApiError::validation("file", "send exactly one file part"));
        }
        let name = filename
            .clone()
            .filter(|f| !f.trim().is_empty())
            .or_else(|| field.file_name().map(str::to_owned))
            .unwrap_or_default();
        let mut spool = Spool::new(&ctx.limits.spool_dir, max)?;
        while let Some(chunk) = field.chunk().await.map_err(multipart_err)? {
            spool.push(&chunk).await?;
        }
        received = Some(Received {
            spool,
            filename: clean_filename(&name),
        });
    }
    received.ok_or_else(|| ApiError::validation("file", "the multipart body has no file part"))
}

async fn upload(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> ApiResult<(StatusCode, HeaderMap, Json<FileView>)> {
    let max = ctx.limits.max_upload_bytes;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let boundary = if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        Some(multer::parse_boundary(&content_type).map_err(|_| {
            ApiError::bad_request(
                code::MALFORMED_BODY,
                "multipart/form-data without a boundary",
            )
        })?)
    } else {
        None
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let slack = if boundary.is_some() {
        MULTIPART_SLACK
    } else {
        0
    };
    if declared.is_some_and(|d| d > max + slack) {
        metrics::counter!("files_uploads_total", "result" => "too_large").increment(1);
        return Err(too_large(max));
    }
    let wanted = declared.map_or(max, |d| d.min(max));
    let quota_bytes = ctx.limits.quota_bytes;
    let Some(id) = quota::reserve(
        &ctx.db,
        user.id,
        i64::try_from(wanted).unwrap_or(i64::MAX),
        i64::try_from(quota_bytes).unwrap_or(i64::MAX),
        RESERVATION_TTL_MS,
    )
    .await?
    else {
        metrics::counter!("files_uploads_total", "result" => "quota_exceeded").increment(1);
        return Err(quota_exceeded(quota_bytes));
    };
    let reservation = Reservation {
        db: ctx.db.clone(),
        id,
        armed: true,
    };
    let received = match boundary {
        Some(b) => receive_multipart(&ctx, req, b, q.filename).await,
        None => receive_raw(&ctx, req, q.filename).await,
    };
    let result = match received {
        Ok(r) => store(&ctx, user.id, r, reservation.id).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(file) => {
            // The reservation ended in the transaction that recorded the file.
            let mut reservation = reservation;
            reservation.armed = false;
            metrics::counter!("files_uploads_total", "result" => "stored").increment(1);
            metrics::counter!("files_upload_bytes_total").increment(file.size as u64);
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&format!("/files/{}", file.id)) {
                headers.insert(header::LOCATION, v);
            }
            Ok((StatusCode::CREATED, headers, Json(FileView::from(&file))))
        }
        Err(e) => {
            reservation.release().await;
            metrics::counter!("files_uploads_total", "result" => e.code).increment(1);
            Err(e)
        }
    }
}

/// Sniffs, processes images, stores the bytes, records the file (ending `reservation`).
async fn store(
    ctx: &ApiContext,
    owner: Uuid,
    received: Received,
    reservation: Uuid,
) -> ApiResult<StoredFile> {
    let Received {
        mut spool,
        filename,
    } = received;
    spool.file.flush().await.map_err(ApiError::internal)?;
    let content_type = sniff::content_type(&spool.head);
    let id = Uuid::now_v7();
    let key = storage::file_key(id);
    let mut file = StoredFile {
        id,
        owner_id: owner,
        filename,
        content_type: content_type.to_owned(),
        size: i64::try_from(spool.size).unwrap_or(i64::MAX),
        sha256: String::new(),
        width: None,
        height: None,
        has_thumbnail: false,
        created_at: kit::time::now_ms(),
    };
    if let Some(raster) = sniff::raster(&spool.head) {
        let path = spool.tmp.path().to_path_buf();
        let limits = ctx.limits.decode;
        let processed = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|e| MediaError::Decode(e.to_string()))?;
            media::process(raster, &bytes, limits)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::bad_request(code::INVALID_IMAGE, format!("{e}")))?;
        file.size = i64::try_from(processed.bytes.len()).unwrap_or(i64::MAX);
        file.sha256 = hex::encode(Sha256::digest(&processed.bytes));
        file.width = Some(i64::from(processed.width));
        file.height = Some(i64::from(processed.height));
        file.has_thumbnail = true;
        ctx.storage.put_bytes(&key, processed.bytes).await?;
        if let Err(e) = ctx
            .storage
            .put_bytes(&storage::thumbnail_key(id), processed.thumbnail)
            .await
        {
            delete_objects(ctx, &[(id, false)]).await;
            return Err(e);
        }
    } else {
        file.sha256 = hex::encode(spool.hasher.clone().finalize());
        ctx.storage
            .put_file(&key, &mut spool.file, spool.size)
            .await?;
    }
    let recorded = async {
        let mut tx = ctx.db.begin().await?;
        files::insert(tx.conn(), &file).await?;
        quota::release(tx.conn(), reservation).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = recorded {
        delete_objects(ctx, &[(id, file.has_thumbnail)]).await;
        return Err(e.into());
    }
    Ok(file)
}

/// `DELETE /files/{id}`: the uploader, while no message carries the file.
async fn delete_file(
    State(ctx): State<ApiContext>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let file = files::get(ctx.db.pool(), id).await?.ok_or_else(not_found)?;
    if file.owner_id != user.id {
        // Readers who are not the uploader learn nothing more than strangers do.
        return Err(not_found());
    }
    let mut tx = ctx.db.begin().await?;
    let deleted = files::delete_unattached(tx.conn(), id, Some(user.id), None).await?;
    let attached = !deleted && attachments::is_attached(tx.conn(), id).await?;
    tx.commit().await?;
    if deleted {
        delete_objects(&ctx, &[(id, file.has_thumbnail)]).await;
        Ok(StatusCode::NO_CONTENT)
    } else if attached {
        Err(ApiError::conflict(
            code::FILE_ATTACHED,
            "the file is attached to a message; delete the message first",
        ))
    } else {
        Err(not_found())
    }
}
