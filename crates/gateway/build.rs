//! Rebuild when the embedded web client or API explorer files change — but not for the
//! browser tests under `web/e2e` (not served): each other entry of `web/` is watched on its
//! own, since watching `web/` would cover `web/e2e` too. (A new top-level entry in `web/`
//! needs one rebuild to be watched.)
fn main() {
    println!("cargo:rerun-if-changed=assets");
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(entries) = std::fs::read_dir("../../web") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name != "e2e" && name != "node_modules" {
                println!(
                    "cargo:rerun-if-changed=../../web/{}",
                    name.to_string_lossy()
                );
            }
        }
    }
}
