//! Deterministic event ids: the same name gives the same id in every language, so a batch
//! that runs again emits the events it emitted before, with the same ids, and the store
//! keeps one copy (see `emit` in the WIT reference).
//!
//! An id is the version 5 UUID (RFC 9562: SHA-1) of a name in the URL namespace. Build the
//! name from what makes the event unique, usually the causing event's id:
//!
//! ```
//! let name = format!("eventhost:inventory:stock.low:{}", "0191e3c4-0000-7000-8000-000000000001");
//! let id = eventhost_sdk::id::v5(&name);
//! assert_eq!(id.len(), 36);
//! ```
//!
//! The same id in Python is `str(uuid.uuid5(uuid.NAMESPACE_URL, name))` (with `hashlib`
//! imported at module level, see the Python guide), and in JavaScript `uuid5(name)` from
//! `sdk/javascript/uuid5.js`; `sdk/uuid5-vectors.json` holds ids all three must give.

use uuid::Uuid;

/// The version 5 UUID of `name` in the URL namespace, lowercase and hyphenated, as
/// `NewEvent::with_id` takes it.
pub fn v5(name: &str) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use serde::Deserialize;

    use super::v5;

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        namespace: String,
        name: String,
        id: String,
    }

    /// The URL-namespace vectors of `sdk/uuid5-vectors.json`, which Python computed.
    fn url_vectors() -> Vec<Vector> {
        let vectors: Vectors =
            serde_json::from_str(include_str!("../../uuid5-vectors.json")).unwrap();
        vectors
            .vectors
            .into_iter()
            .filter(|vector| vector.namespace == uuid::Uuid::NAMESPACE_URL.to_string())
            .collect()
    }

    #[test]
    fn gives_the_ids_of_the_shared_vectors() {
        let vectors = url_vectors();
        assert!(vectors.len() >= 9);
        for vector in vectors {
            assert_eq!(v5(&vector.name), vector.id, "name {:?}", vector.name);
        }
    }

    /// The Python guide's recipe, run by the machine's Python, gives the same ids.
    #[test]
    fn the_python_recipe_gives_the_same_ids() {
        let recipe = "import hashlib\nimport json\nimport sys\nimport uuid\n\n\
                      def deterministic_id(name):\n    \
                      return str(uuid.uuid5(uuid.NAMESPACE_URL, name))\n\n\
                      print(json.dumps([deterministic_id(n) for n in json.load(sys.stdin)]))\n";
        let vectors = url_vectors();
        let names: Vec<&str> = vectors.iter().map(|vector| vector.name.as_str()).collect();
        let mut python = Command::new("python3")
            .args(["-c", recipe])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (the Python guide's recipe is checked with it)");
        python
            .stdin
            .take()
            .unwrap()
            .write_all(serde_json::to_string(&names).unwrap().as_bytes())
            .unwrap();
        let output = python.wait_with_output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let ids: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
        let ours: Vec<String> = names.iter().map(|name| v5(name)).collect();
        assert_eq!(ids, ours);
    }
}
