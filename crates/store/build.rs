//! `sqlx::migrate!` embeds the migration files at compile time; rebuild when they change (as
//! the sqlx documentation advises), or a new migration would be silently left out.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
