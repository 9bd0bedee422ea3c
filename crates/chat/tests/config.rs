//! Configuration values below their minimum stop `chat::build` with an error that names
//! the key and the minimum (they used to be raised silently).
#![allow(clippy::unwrap_used)]

async fn build_error(tweak: impl FnOnce(&mut chat::Config)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = chat::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    tweak(&mut config);
    let common = kit::config::CommonConfig {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    match chat::build(&common, &config, bus::Bus::memory(), Default::default()).await {
        Ok(_) => panic!("a configuration below a minimum was accepted"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn minimums_are_checked_at_build() {
    let e = build_error(|c| c.fanout_resync_ms = 99).await;
    assert_eq!(
        e,
        "invalid configuration: chat.fanout_resync_ms = 99, the minimum is 100"
    );
    let e = build_error(|c| c.users_timeout_ms = 0).await;
    assert_eq!(
        e,
        "invalid configuration: chat.users_timeout_ms = 0, the minimum is 1"
    );
    let e = build_error(|c| c.ws_max_frame_bytes = 512).await;
    assert_eq!(
        e,
        "invalid configuration: chat.ws_max_frame_bytes = 512, the minimum is 1024"
    );
    let e = build_error(|c| c.ws_inbox_queue = 0).await;
    assert_eq!(
        e,
        "invalid configuration: chat.ws_inbox_queue = 0, the minimum is 1"
    );
    let e = build_error(|c| c.presence_heartbeat_ms = 50).await;
    assert_eq!(
        e,
        "invalid configuration: chat.presence_heartbeat_ms = 50, the minimum is 100"
    );
    // The node TTL must cover two heartbeats.
    let e = build_error(|c| {
        c.presence_heartbeat_ms = 1_000;
        c.presence_node_ttl_ms = 1_999;
    })
    .await;
    assert_eq!(
        e,
        "invalid configuration: chat.presence_node_ttl_ms = 1999, the minimum is 2000"
    );
}

#[test]
fn the_defaults_are_valid() {
    chat::Config::default().validate().unwrap();
}
