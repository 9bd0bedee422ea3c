//! A private `redis-server` per test, for fault tests that kill, wipe or rewind Redis
//! without touching the shared one at `TEST_REDIS_URL`.
//!
//! [`PrivateRedis::start`] returns `None` (after printing why) when `TEST_REDIS_URL` is
//! unset — the same switch as [`kit::testing::redis_url`], so CI without Redis skips these
//! tests — or when no `redis-server` binary is found (`REDIS_SERVER` or
//! `/usr/bin/redis-server`, then `redis-server` on `PATH`).
//!
//! The server listens on 127.0.0.1 on a free port that stays the same across
//! [`kill`](PrivateRedis::kill) / [`restart`](PrivateRedis::restart), so clients built
//! with [`url`](PrivateRedis::url) reconnect to the new process. Its data directory is a
//! fresh temp directory, removed (and the server killed) on drop.
//!
//! Blocking (std process and socket calls, a few ms each; a start waits up to 5 s for the
//! server to answer PING), so it can be called from sync code and from `Drop`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server gets to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// A `redis-server` child process owned by one test.
pub struct PrivateRedis {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    aof: bool,
    child: Option<Child>,
}

/// A copy of an AOF-persisted server's data directory taken at one moment
/// ([`PrivateRedis::aof_checkpoint`]); [`PrivateRedis::restart_from`] restarts the server
/// from it, as if the writes after that moment had not reached the disk.
pub struct AofCheckpoint {
    dir: PathBuf,
}

impl Drop for AofCheckpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PrivateRedis {
    /// A server without persistence (`--save "" --appendonly no`): a restart comes back
    /// empty.
    pub fn start(test: &str) -> Option<Self> {
        Self::launch(test, false)
    }

    /// A server with `--appendonly yes --appendfsync everysec` (as deployed): a
    /// [`restart`](Self::restart) reloads the AOF; [`aof_checkpoint`](Self::aof_checkpoint)
    /// and [`restart_from`](Self::restart_from) simulate losing its last writes.
    pub fn start_aof(test: &str) -> Option<Self> {
        Self::launch(test, true)
    }

    fn launch(test: &str, aof: bool) -> Option<Self> {
        if kit::testing::env_url("TEST_REDIS_URL").is_none() {
            println!("SKIP {test}: TEST_REDIS_URL is not set (needed for a private redis-server)");
            return None;
        }
        let Some(binary) = find_binary() else {
            println!("SKIP {test}: no redis-server binary (set REDIS_SERVER or install redis)");
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "bus-private-redis-{}",
            uuid::Uuid::now_v7().simple()
        ));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("{test}: cannot create {}: {e}", dir.display());
        }
        // A free port can be taken between our probe and the server's bind: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = match free_port() {
                Ok(p) => p,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let mut redis = Self {
                binary: binary.clone(),
                port,
                dir: dir.clone(),
                aof,
                child: None,
            };
            match redis.spawn() {
                Ok(()) => return Some(redis),
                Err(e) => {
                    last_error = e;
                    // Keep the directory for the next attempt (Drop would remove it).
                    redis.kill();
                    std::mem::forget(redis);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("{test}: cannot start a private redis-server: {last_error}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory (the AOF lives in `appendonlydir/` under it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a server process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: nothing is flushed or saved; clients see refused connections until a
    /// restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server (if running) and starts it again on the same port with the same
    /// data directory: without persistence it comes back empty, with AOF it reloads
    /// what reached the AOF.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn() {
            panic!("cannot restart the private redis-server: {e}");
        }
    }

    /// Kills the server and starts it on the same port with an empty data directory:
    /// everything it held is gone (a restart without persistence, or a lost volume).
    pub fn restart_empty(&mut self) {
        self.kill();
        clear_dir(&self.dir);
        if let Err(e) = self.spawn() {
            panic!("cannot restart the private redis-server: {e}");
        }
    }

    /// `FLUSHALL` on the running server (every key, stream and consumer group gone while
    /// the process and its connections stay up).
    pub fn flushall(&self) {
        if let Err(e) = command(self.port, &["FLUSHALL"]) {
            panic!("FLUSHALL on the private redis-server failed: {e}");
        }
    }

    /// Copies the data directory now (AOF variant). Writes after this moment are what a
    /// later [`restart_from`](Self::restart_from) loses — like `appendfsync everysec`
    /// losing its last second, or a failover to a replica that was behind.
    pub fn aof_checkpoint(&self) -> AofCheckpoint {
        assert!(self.aof, "aof_checkpoint needs PrivateRedis::start_aof");
        // Redis write()s the AOF buffer before each event-loop sleep; `everysec` only delays
        // the fsync, so a copy (through the page cache) sees every write acknowledged so far.
        let copy = std::env::temp_dir().join(format!(
            "bus-private-redis-aof-{}",
            uuid::Uuid::now_v7().simple()
        ));
        if let Err(e) = copy_dir(&self.dir, &copy) {
            panic!("cannot copy the AOF directory: {e}");
        }
        AofCheckpoint { dir: copy }
    }

    /// Kills the server and restarts it from `checkpoint`'s copy of the data directory.
    pub fn restart_from(&mut self, checkpoint: &AofCheckpoint) {
        self.kill();
        clear_dir(&self.dir);
        if let Err(e) = copy_dir(&checkpoint.dir, &self.dir) {
            panic!("cannot restore the AOF directory: {e}");
        }
        if let Err(e) = self.spawn() {
            panic!("cannot restart the private redis-server: {e}");
        }
    }

    /// Starts the process and waits until it answers PING.
    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg("redis.log");
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                return Err(format!("redis-server exited with {status}: {tail}"));
            }
            match command(self.port, &["PING"]) {
                Ok(reply) if reply.starts_with("+PONG") => return Ok(()),
                // "-LOADING": still reading its AOF.
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                other => return Err(format!("no PONG within {START_TIMEOUT:?}: {other:?}")),
            }
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_binary() -> Option<PathBuf> {
    if let Some(path) = kit::testing::env_url("REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let fixed = PathBuf::from("/usr/bin/redis-server");
    if fixed.exists() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.exists())
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Sends one command (RESP array of bulk strings) and returns the first line of the reply.
fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(out.as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while !reply.ends_with(b"\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

/// Removes the directory's contents except the server's log.
fn clear_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "redis.log") {
            continue;
        }
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
