//! Rebuilds the crate when a migration is added or edited: `sqlx::migrate!`
//! embeds the migrations at compile time, and Cargo does not otherwise
//! watch the directory.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
