//! Where the bytes live: a directory on the local disk (default `<data dir>/files`) or an
//! S3-compatible bucket, behind `object_store`. Objects: `files/<id>` and
//! `thumbnails/<id>`. Uploads reach the store from the spooled file in parts, so a
//! 25 MiB file never sits in memory whole.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use kit::ApiError;
use kit::error::code;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    WriteMultipart,
};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

/// `[files.storage]`: local unless `s3_bucket` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Directory of the local store; unset = `<data dir>/files`.
    pub local_dir: Option<std::path::PathBuf>,
    /// The S3 bucket; set = use S3. Credentials come from the standard `AWS_*`
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// web identity, instance metadata), or from the two keys below.
    pub s3_bucket: Option<String>,
    /// Overrides `AWS_ACCESS_KEY_ID` (e.g. `INTELLICOLAB_FILES__STORAGE__S3_ACCESS_KEY_ID`).
    pub s3_access_key_id: Option<String>,
    /// Overrides `AWS_SECRET_ACCESS_KEY`; never printed (`Debug` shows `***`).
    pub s3_secret_access_key: Option<Secret>,
    /// `https://…` of an S3-compatible service (MinIO, R2, a test server); unset = AWS.
    pub s3_endpoint: Option<String>,
    /// Region; unset = `AWS_DEFAULT_REGION` or `us-east-1`.
    pub s3_region: Option<String>,
    /// Allow an `http://` endpoint (test servers, a store on the same host).
    pub s3_allow_http: bool,
}

/// A value that `Debug` never prints (configuration is logged on errors).
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Bytes buffered per part of a multipart upload.
    part_size: usize,
}

/// S3 refuses parts below 5 MiB (except the last); a smaller file is one PUT.
const S3_PART: usize = 5 * 1024 * 1024;
/// Local parts are writes into the staging file: 1 MiB keeps ten concurrent 25 MiB
/// uploads at about 10–20 MiB of buffers.
const LOCAL_PART: usize = 1024 * 1024;
/// Parts in flight per upload beyond the one being filled.
const PARTS_IN_FLIGHT: usize = 1;

pub fn file_key(id: uuid::Uuid) -> Path {
    Path::from(format!("files/{id}"))
}

pub fn thumbnail_key(id: uuid::Uuid) -> Path {
    Path::from(format!("thumbnails/{id}"))
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "object store operation failed");
    ApiError::unavailable(
        code::STORAGE_UNAVAILABLE,
        "file storage is unavailable; try again later",
    )
}

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("no such object")]
    NotFound,
    #[error(transparent)]
    Other(ApiError),
}

impl Storage {
    pub fn open(config: &StorageConfig, data_dir: &FsPath) -> anyhow::Result<Storage> {
        if let Some(bucket) = &config.s3_bucket {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                // The whole client options (`allow_http` is one of them): a builder call
                // setting one option before this would be overwritten.
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_allow_http(config.s3_allow_http)
                        // object_store's default 30 s bound covers the whole response: it
                        // would cut a 25 MiB download to a client slower than 0.9 MB/s.
                        // A stall is caught per read instead.
                        .with_timeout_disabled()
                        .with_read_timeout(Duration::from_secs(30))
                        .with_connect_timeout(Duration::from_secs(2)),
                )
                // The default retries for up to 3 minutes: a client would wait that long
                // for its 503. Three tries within 5 s ride out a blip; an outage answers
                // 503 + Retry-After at once.
                .with_retry(object_store::RetryConfig {
                    backoff: object_store::BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(1),
                        base: 2.0,
                    },
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(5),
                });
            if let Some(endpoint) = &config.s3_endpoint {
                b = b.with_endpoint(endpoint);
            }
            if let Some(id) = &config.s3_access_key_id {
                b = b.with_access_key_id(id);
            }
            if let Some(secret) = &config.s3_secret_access_key {
                b = b.with_secret_access_key(&secret.0);
            }
            if let Some(region) = &config.s3_region {
                b = b.with_region(region);
            }
            let store = b
                .build()
                .map_err(|e| anyhow::anyhow!("files: cannot configure S3 bucket {bucket}: {e}"))?;
            return Ok(Storage {
                store: Arc::new(store),
                part_size: S3_PART,
            });
        }
        let dir = config
            .local_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("files"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("files: cannot create {}: {e}", dir.display()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| anyhow::anyhow!("files: cannot open {}: {e}", dir.display()))?;
        Ok(Storage {
            store: Arc::new(store),
            part_size: LOCAL_PART,
        })
    }

    /// Stores `size` bytes read from `file` (from its start) under `key`.
    pub async fn put_file(
        &self,
        key: &Path,
        file: &mut tokio::fs::File,
        size: u64,
    ) -> Result<(), ApiError> {
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(ApiError::internal)?;
        if size <= self.part_size as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            file.read_to_end(&mut buf)
                .await
                .map_err(ApiError::internal)?;
            return self.put_bytes(key, buf).await;
        }
        let upload = self
            .store
            .put_multipart_opts(key, PutMultipartOptions::default())
            .await
            .map_err(unavailable)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(ApiError::internal(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(unavailable(e));
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(unavailable)?;
        Ok(())
    }

    pub async fn put_bytes(&self, key: &Path, bytes: Vec<u8>) -> Result<(), ApiError> {
        self.store
            .put_opts(key, PutPayload::from(bytes), PutOptions::default())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The object's bytes (or `range` of them) as a stream.
    pub async fn get(
        &self,
        key: &Path,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, GetError> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        match self.store.get_opts(key, opts).await {
            Ok(r) => Ok(r
                .into_stream()
                .map(|c| c.map_err(std::io::Error::other))
                .boxed()),
            Err(object_store::Error::NotFound { .. }) => Err(GetError::NotFound),
            Err(e) => Err(GetError::Other(unavailable(e))),
        }
    }

    /// Readiness: the store answers a metadata request (a missing object is an answer).
    pub async fn ping(&self) -> Result<(), String> {
        match self.store.head(&Path::from("readyz-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Deletes the objects; one already gone is fine.
    pub async fn delete(&self, keys: Vec<Path>) -> Result<(), ApiError> {
        let paths = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
        let mut results = self.store.delete_stream(paths);
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }
}
