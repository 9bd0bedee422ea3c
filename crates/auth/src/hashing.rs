//! argon2id with OWASP parameters (m = 19456 KiB, t = 2, p = 1), run on dedicated hashing
//! threads — one per core, at a lower scheduling priority (nice ≈ 9) — behind a semaphore
//! sized to the cores: a login storm queues here, and when the request path needs CPU the
//! kernel gives it first, instead of every other request waiting behind argon2.

use std::sync::{Arc, LazyLock, Mutex, mpsc};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a random password, verified against when the account does not exist so
/// that unknown users cost the same time as wrong passwords (no timing oracle).
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let random = hex_random();
    argon2()
        .hash_password(random.as_bytes())
        .map(|h| h.to_string())
        .unwrap_or_default()
});

fn hex_random() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
}

/// Niceness ≈ 9 (thread-priority maps 0–99 onto nice 20…−20): under contention the hashing
/// threads get about an eighth of a core's time against a request-path thread.
const HASHING_PRIORITY: u8 = 25;

impl Default for Hasher {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..cores {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let lowered = thread_priority::ThreadPriorityValue::try_from(HASHING_PRIORITY)
                        .map_err(|e| e.to_string())
                        .and_then(|p| {
                            thread_priority::set_current_thread_priority(
                                thread_priority::ThreadPriority::Crossplatform(p),
                            )
                            .map_err(|e| format!("{e:?}"))
                        });
                    if let Err(e) = lowered {
                        tracing::warn!(error = %e, "cannot lower the hashing threads' priority");
                    }
                    // Ends when every `Hasher` (every sender) is gone.
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a hashing thread");
            }
        }
        Self {
            permits: Arc::new(Semaphore::new(cores)),
            jobs,
        }
    }
}

impl Hasher {
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        // The permit moves into the job: if the client goes away and this future is
        // dropped, the hash still running keeps its permit, so at most `cores` hashes are
        // ever queued or running.
        let permit = self.permits.clone().acquire_owned().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _permit = permit;
                let _ = tx.send(f());
            }))
            .map_err(|_| anyhow::anyhow!("the hashing threads are gone"))?;
        Ok(rx.await?)
    }

    pub async fn hash(&self, password: &str) -> anyhow::Result<String> {
        let password = password.to_owned();
        self.run(move || {
            argon2()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
        })
        .await?
    }

    /// Verifies `password` against `hash`, or against a dummy hash when there is no
    /// account, so both cases cost one argon2 computation.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> anyhow::Result<bool> {
        let password = password.to_owned();
        let (hash, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (DUMMY_HASH.clone(), false),
        };
        self.run(move || {
            let ok = PasswordHash::new(&hash)
                .map(|parsed| {
                    argon2()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false);
            ok && real
        })
        .await
    }
}
