//! `sha256:<hex>` digests, as proofs carry them.

use sha2::{Digest, Sha256};

/// `sha256:` followed by the lowercase hex SHA-256 of `bytes`.
pub fn sha256_tagged(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Digest of a JSON value as proofs define it: compact JSON with sorted keys
/// (what `serde_json` writes for a [`serde_json::Value`]).
pub fn json_digest(value: &serde_json::Value) -> String {
    // A Value's keys are strings and a Vec takes every write, so this
    // cannot fail; an empty fallback would digest nothing.
    let bytes = serde_json::to_vec(value).expect("a JSON value always serializes");
    sha256_tagged(&bytes)
}

/// Raw SHA-256.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A SHA-256 fed in pieces: the digest of bytes that are streamed, never
/// held whole (an uploaded blob, a file being sent).
#[derive(Debug, Clone, Default)]
pub struct StreamDigest(Sha256);

impl StreamDigest {
    /// Adds `bytes` to what is hashed.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// `sha256:` followed by the lowercase hex SHA-256 of all the bytes.
    pub fn finish_tagged(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }

    /// The raw SHA-256 of all the bytes.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// A serializer writes into the digest as it goes (`serde_json::to_writer`),
/// so that a value is hashed without its bytes being held whole.
impl std::io::Write for StreamDigest {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sage_types::task::TASK_PAYLOAD_TYPE;
    use sage_types::testing;
    use serde_json::{json, Map, Value};

    #[test]
    fn a_streamed_digest_is_the_digest_of_the_whole() {
        let mut streamed = StreamDigest::default();
        streamed.update(b"hello ");
        streamed.update(b"world");
        assert_eq!(streamed.finish_tagged(), sha256_tagged(b"hello world"));
    }

    /// An object with `entries` inserted in that order.
    fn object(entries: &[(&str, Value)]) -> Value {
        let mut map = Map::new();
        for (key, value) in entries {
            map.insert((*key).to_owned(), value.clone());
        }
        Value::Object(map)
    }

    /// The workspace leaves serde_json's `preserve_order` feature off, so a
    /// `Map` is sorted. Should a dependency turn it on, a `Map` would keep
    /// insertion order, and the same input would give another payload,
    /// digest and signature: this test fails then.
    #[test]
    fn digests_do_not_depend_on_key_insertion_order() {
        let inner = [
            ("z", json!(1)),
            ("a", json!([1.5, "x"])),
            ("m", Value::Null),
        ];
        let inner_reversed: Vec<_> = inner.iter().rev().cloned().collect();
        let entries = [
            ("query", json!("hi")),
            ("options", object(&inner)),
            ("b", json!(2)),
            ("a", json!(true)),
        ];
        let mut entries_reversed: Vec<_> = entries.iter().rev().cloned().collect();
        entries_reversed[2].1 = object(&inner_reversed);
        let one = object(&entries);
        let other = object(&entries_reversed);

        assert_eq!(
            json_digest(&one),
            json_digest(&other),
            "the digest follows insertion order: is serde_json's preserve_order on?"
        );
        assert_eq!(
            json_digest(&one),
            sha256_tagged(
                br#"{"a":true,"b":2,"options":{"a":[1.5,"x"],"m":null,"z":1},"query":"hi"}"#
            )
        );

        let (task_one, task_other) = (
            testing::task("summarize", one.clone()),
            testing::task("summarize", other.clone()),
        );
        assert_eq!(task_one.payload(), task_other.payload());
        assert_eq!(
            sha256_tagged(&task_one.payload()),
            sha256_tagged(&task_other.payload())
        );
        let key = crate::NodeKey::from_seed(&[7; 32]);
        assert_eq!(
            crate::sign_envelope(&key, TASK_PAYLOAD_TYPE, &task_one.payload()),
            crate::sign_envelope(&key, TASK_PAYLOAD_TYPE, &task_other.payload())
        );

        assert_eq!(
            crate::legacy::signing_bytes(&one),
            crate::legacy::signing_bytes(&other)
        );
    }

    #[test]
    fn known_answer() {
        assert_eq!(
            sha256_tagged(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn json_digest_ignores_source_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":[1.5,"x"]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{ "a": [1.5, "x"], "b": 1 }"#).unwrap();
        assert_eq!(json_digest(&a), json_digest(&b));
        assert_eq!(json_digest(&a), sha256_tagged(br#"{"a":[1.5,"x"],"b":1}"#));
    }
}
