//! A configuration below a service's minimums is refused by every command, naming the key
//! and the minimum — `migrate` too, which builds no service.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn migrate_refuses_a_value_below_its_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_intellicolab"))
        .args(["migrate", "--data-dir", dir.path().to_str().unwrap()])
        .env("INTELLICOLAB_CHAT__FANOUT_RESYNC_MS", "10")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "migrate accepted fanout_resync_ms = 10"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("chat.fanout_resync_ms") && stderr.contains("100"),
        "{stderr}"
    );

    let ok = Command::new(env!("CARGO_BIN_EXE_intellicolab"))
        .args(["migrate", "--data-dir", dir.path().to_str().unwrap()])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}
