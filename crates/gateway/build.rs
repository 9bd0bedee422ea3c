//! Rebuild when the embedded web client or API explorer files change.
fn main() {
    println!("cargo:rerun-if-changed=../../web");
    println!("cargo:rerun-if-changed=assets");
}
