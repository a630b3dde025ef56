//! hostile-other-world: a valid component of another world (`other`, exporting `run`).
//!
//! It neither exports `describe`/`handle` nor imports the host interface; the daemon must
//! refuse to load it with a clear error and keep running every other plugin.

wit_bindgen::generate!({
    path: "wit",
    world: "other",
});

struct Other;

impl Guest for Other {
    fn run() {}
}

export!(Other);
