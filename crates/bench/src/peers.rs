//! Peers the gateway is compared with, installed on demand and never vendored:
//! nginx (Debian package) as a plain keep-alive reverse proxy, and the seed's gateway —
//! express + http-proxy-middleware with a JWT check (jose, EdDSA via the JWKS) — from npm.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

/// A peer proxy running as a child process; stopped on drop.
pub struct Peer {
    pub port: u16,
    child: Child,
    /// A command that shuts the peer down with its children (nginx workers outlive a
    /// SIGKILLed master); `None`: killing the process is enough.
    stop_command: Option<Vec<std::ffi::OsString>>,
    _dir: tempfile::TempDir,
    pub version: String,
}

impl Peer {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    fn shut_down(&mut self) {
        if let Some(cmd) = self.stop_command.take()
            && let Some((program, args)) = cmd.split_first()
        {
            let _ = std::process::Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    pub async fn stop(mut self) {
        self.shut_down();
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

async fn run_quiet(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    Ok(())
}

/// Finds nginx, installing `nginx-light` (or `nginx`) with apt-get when allowed.
pub async fn nginx_binary(install: bool) -> anyhow::Result<PathBuf> {
    debian_binary("nginx", &["nginx-light", "nginx"], install).await
}

/// Finds `name` on the PATH (or in /usr/sbin), installing the first of `packages` that
/// apt-get can install when allowed.
pub async fn debian_binary(
    name: &str,
    packages: &[&str],
    install: bool,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = which(name) {
        return Ok(p);
    }
    anyhow::ensure!(
        install,
        "{name} is not installed (and --no-install was given)"
    );
    anyhow::ensure!(
        which("apt-get").is_some(),
        "{name} is not installed and apt-get is not available"
    );
    eprintln!("installing {name} with apt-get …");
    let mut last = Err(anyhow::anyhow!("no package tried"));
    for pkg in packages {
        last = run_quiet(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", pkg])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &format!("apt-get install {pkg}"),
        )
        .await;
        if last.is_ok() {
            break;
        }
    }
    last?;
    which(name).with_context(|| format!("{name} still not found after installation"))
}

/// A command running `program`, pinned to `core` with `taskset` when a core is given
/// and taskset exists (it execs the program: the child's pid is the program's).
pub fn pinned_command(program: impl AsRef<std::ffi::OsStr>, core: Option<usize>) -> Command {
    match (core, which("taskset")) {
        (Some(core), Some(taskset)) => {
            let mut cmd = Command::new(taskset);
            cmd.arg("-c").arg(core.to_string()).arg(program);
            cmd
        }
        _ => Command::new(program),
    }
}

/// Pins every thread of a running process to `core` (`taskset -a -p`); threads it starts
/// later inherit the mask.
pub async fn pin_process(pid: u32, core: usize) -> anyhow::Result<()> {
    anyhow::ensure!(which("taskset").is_some(), "taskset is not installed");
    run_quiet(
        Command::new("taskset")
            .args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()])
            .stdout(Stdio::null()),
        "taskset",
    )
    .await
}

async fn wait_port(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{what} exited with {status}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{what} did not listen on {port} within 20 s")
}

/// What both nginx configurations share: workers, files in `dir`, the opened `http {`.
fn nginx_head(dir: &Path, workers: usize) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
"#
    )
}

/// The nginx configuration of a plain keep-alive reverse proxy to `upstream_port`.
pub fn nginx_config(dir: &Path, listen_port: u16, upstream_port: u16, workers: usize) -> String {
    let head = nginx_head(dir, workers);
    format!(
        r#"{head}    upstream service {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{listen_port} backlog=4096;
        location / {{
            proxy_pass http://service;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"#
    )
}

pub async fn start_nginx(install: bool, upstream_port: u16) -> anyhow::Result<Peer> {
    let workers = crate::procstat::cores();
    start_nginx_with(install, None, |dir, port| {
        nginx_config(dir, port, upstream_port, workers)
    })
    .await
}

/// nginx with the configuration `config(dir, listen_port)`, pinned to `core` if given.
pub async fn start_nginx_with(
    install: bool,
    core: Option<usize>,
    config: impl FnOnce(&Path, u16) -> String,
) -> anyhow::Result<Peer> {
    let bin = nginx_binary(install).await?;
    let dir = tempfile::tempdir()?;
    let port = crate::system::free_port()?;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, config(dir.path(), port))?;
    let version = Command::new(&bin)
        .arg("-v")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default();
    let child = pinned_command(&bin, core)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting nginx")?;
    let stop_command = Some(vec![
        bin.into_os_string(),
        "-p".into(),
        dir.path().as_os_str().to_owned(),
        "-c".into(),
        conf.into_os_string(),
        "-s".into(),
        "stop".into(),
    ]);
    let error_log = dir.path().join("error.log");
    // From here on, dropping the peer shuts nginx down, workers included.
    let mut peer = Peer {
        port,
        child,
        stop_command,
        _dir: dir,
        version,
    };
    if let Err(e) = wait_port(port, &mut peer.child, "nginx").await {
        anyhow::bail!("{e}: {}", crate::system::tail(&error_log, 5));
    }
    Ok(peer)
}

/// The body the stand-in upstream answers every request with: the size of a small
/// `GET /users/me` profile, below the gateway's compression threshold.
pub const UPSTREAM_BODY: &str = r#"{"id":"0190c8a4-7a4e-7c3e-9d0b-5b2f3c1d9e01","username":"bench","display_name":"Bench User","bio":"","avatar_url":null,"status":"active"}"#;

/// One nginx worker answering `200` with [`UPSTREAM_BODY`] to everything (`/readyz`
/// included): an upstream that costs next to nothing, so a proxy's own cost shows.
pub fn nginx_static_config(dir: &Path, listen_port: u16) -> String {
    let head = nginx_head(dir, 1);
    format!(
        r#"{head}    server {{
        listen 127.0.0.1:{listen_port} backlog=4096;
        default_type application/json;
        location / {{
            return 200 '{UPSTREAM_BODY}';
        }}
    }}
}}
"#
    )
}

/// HAProxy as a plain keep-alive HTTP proxy with one thread, connections to the
/// upstream reused (`http-reuse always`), `X-Forwarded-For` added like nginx's.
pub fn haproxy_config(listen_port: u16, upstream_port: u16) -> String {
    format!(
        r#"global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    option forwardfor
    http-reuse always

frontend gateway
    bind 127.0.0.1:{listen_port}
    default_backend service

backend service
    server s1 127.0.0.1:{upstream_port}
"#
    )
}

/// HAProxy (Debian package `haproxy`), foreground, one thread, pinned to `core` if given.
pub async fn start_haproxy(
    install: bool,
    upstream_port: u16,
    core: Option<usize>,
) -> anyhow::Result<Peer> {
    let bin = debian_binary("haproxy", &["haproxy"], install).await?;
    let dir = tempfile::tempdir()?;
    let port = crate::system::free_port()?;
    let conf = dir.path().join("haproxy.cfg");
    std::fs::write(&conf, haproxy_config(port, upstream_port))?;
    let version = Command::new(&bin)
        .arg("-v")
        .output()
        .await
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default();
    let log = dir.path().join("haproxy.log");
    let child = pinned_command(&bin, core)
        .arg("-db")
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&log)?))
        .stderr(Stdio::from(std::fs::File::create(
            dir.path().join("haproxy.err"),
        )?))
        .kill_on_drop(true)
        .spawn()
        .context("starting haproxy")?;
    let err_log = dir.path().join("haproxy.err");
    let mut peer = Peer {
        port,
        child,
        stop_command: None,
        _dir: dir,
        version,
    };
    if let Err(e) = wait_port(port, &mut peer.child, "haproxy").await {
        anyhow::bail!("{e}: {}", crate::system::tail(&err_log, 5));
    }
    Ok(peer)
}

/// A process the caller configured (our gateway alone), as a [`Peer`] once it listens on
/// `port`; `dir` lives as long as it runs.
pub async fn start_process(
    mut cmd: Command,
    port: u16,
    dir: tempfile::TempDir,
    log: Option<PathBuf>,
    version: String,
    what: &str,
) -> anyhow::Result<Peer> {
    let child = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut peer = Peer {
        port,
        child,
        stop_command: None,
        _dir: dir,
        version,
    };
    if let Err(e) = wait_port(port, &mut peer.child, what).await {
        let tail = log.map(|l| crate::system::tail(&l, 10)).unwrap_or_default();
        anyhow::bail!("{e}: {tail}");
    }
    Ok(peer)
}

/// The seed's gateway: express + http-proxy-middleware, keep-alive agent, and a JWT check
/// (EdDSA, keys from our JWKS) before proxying — what a fair comparison must include.
const EXPRESS_GATEWAY: &str = r#"import http from 'node:http';
import express from 'express';
import { createProxyMiddleware } from 'http-proxy-middleware';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [port, target, jwksUrl] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(jwksUrl));
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const app = express();
app.disable('x-powered-by');
app.use(async (req, res, next) => {
  const h = req.headers.authorization || '';
  if (!h.startsWith('Bearer ')) return res.status(401).json({ code: 'unauthorized' });
  try {
    await jwtVerify(h.slice(7), jwks, { algorithms: ['EdDSA'] });
    next();
  } catch {
    res.status(401).json({ code: 'invalid_token' });
  }
});
app.use(createProxyMiddleware({ target, agent }));
app.listen(Number(port), '127.0.0.1');
"#;

pub async fn start_express(
    install: bool,
    upstream_port: u16,
    auth_port: u16,
    core: Option<usize>,
) -> anyhow::Result<Peer> {
    anyhow::ensure!(which("node").is_some(), "node is not installed");
    anyhow::ensure!(which("npm").is_some(), "npm is not installed");
    anyhow::ensure!(
        install,
        "node packages are installed per run (and --no-install was given)"
    );
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("package.json"),
        r#"{"name":"seed-gateway","private":true,"type":"module"}"#,
    )?;
    eprintln!("installing express, http-proxy-middleware, jose from npm …");
    run_quiet(
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "express",
                "http-proxy-middleware",
                "jose",
            ])
            .current_dir(dir.path()),
        "npm install",
    )
    .await?;
    let script = dir.path().join("gateway.mjs");
    std::fs::write(&script, EXPRESS_GATEWAY)?;
    let installed = |pkg: &str| -> String {
        std::fs::read_to_string(
            dir.path()
                .join("node_modules")
                .join(pkg)
                .join("package.json"),
        )
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(|s| format!("{pkg} {s}")))
        .unwrap_or_else(|| format!("{pkg} ?"))
    };
    let node_version = Command::new("node")
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let version = format!(
        "node {node_version}, {}, {}, {}",
        installed("express"),
        installed("http-proxy-middleware"),
        installed("jose")
    );
    let port = crate::system::free_port()?;
    let mut child = pinned_command("node", core)
        .arg(&script)
        .arg(port.to_string())
        .arg(format!("http://127.0.0.1:{upstream_port}"))
        .arg(format!(
            "http://127.0.0.1:{auth_port}/auth/.well-known/jwks.json"
        ))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting node")?;
    wait_port(port, &mut child, "the express gateway").await?;
    Ok(Peer {
        port,
        child,
        stop_command: None,
        _dir: dir,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_config_is_a_keepalive_proxy_to_the_upstream() {
        let c = nginx_config(Path::new("/tmp/x"), 9000, 3003, 2);
        assert!(c.contains("listen 127.0.0.1:9000"));
        assert!(c.contains("server 127.0.0.1:3003;"));
        assert!(c.contains("keepalive 256;"));
        assert!(c.contains("proxy_set_header Connection \"\";"));
        assert!(c.contains("daemon off;"));
        assert!(c.contains("worker_processes 2;"));
    }

    #[test]
    fn static_upstream_and_haproxy_configs() {
        let c = nginx_static_config(Path::new("/tmp/x"), 9001);
        assert!(c.contains("listen 127.0.0.1:9001"));
        assert!(c.contains("worker_processes 1;"));
        assert!(c.contains(&format!("return 200 '{UPSTREAM_BODY}';")));
        assert!(serde_json::from_str::<serde_json::Value>(UPSTREAM_BODY).is_ok());
        let h = haproxy_config(9002, 9001);
        assert!(h.contains("nbthread 1"));
        assert!(h.contains("bind 127.0.0.1:9002"));
        assert!(h.contains("server s1 127.0.0.1:9001"));
        assert!(h.contains("http-reuse always"));
    }
}
