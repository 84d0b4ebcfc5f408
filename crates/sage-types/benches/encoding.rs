//! Encoding costs of `sage-types`: the DSSE envelope of a typical task on
//! the wire, the task itself, PAE, and the Python-compatible canonical JSON
//! of the legacy protocol next to plain `serde_json` as a baseline.
//!
//! Run with `cargo bench -p sage-types`.

// Benchmarks are not tests, so clippy.toml's allow-unwrap-in-tests does not
// cover them; a failing unwrap here is a broken setup and should panic.
#![allow(clippy::unwrap_used)]
// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sage_types::canonical::to_python_json;
use sage_types::envelope::pae;
use sage_types::task::TASK_PAYLOAD_TYPE;
use sage_types::testing::typical_task;
use sage_types::{Envelope, Task};

/// The legacy protocol's golden vectors, `<repo>/tests/data/legacy-v0.json`.
const LEGACY_VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/legacy-v0.json"
);

/// Stands in for a key id and an Ed25519 signature: this crate has no keys,
/// and only their lengths matter to the encoding.
const KEY_ID: &str = "ed25519:0123456789abcdef0123456789abcdef";
const SIGNATURE: [u8; 64] = [0x5a; 64];

/// The envelope as it goes on the wire: payload and one signature.
fn encode_envelope(payload: &[u8]) -> Vec<u8> {
    let mut envelope = Envelope::new(TASK_PAYLOAD_TYPE, payload);
    envelope.push_signature(KEY_ID, &SIGNATURE);
    serde_json::to_vec(&envelope).unwrap()
}

fn envelope_and_task(c: &mut Criterion) {
    let task = typical_task();
    let payload = serde_json::to_vec(&task).unwrap();
    assert!(
        (300..=400).contains(&payload.len()),
        "payload is {} bytes",
        payload.len()
    );
    let wire = encode_envelope(&payload);

    let mut group = c.benchmark_group("encoding");
    group.bench_function("envelope_encode", |b| {
        b.iter(|| encode_envelope(black_box(&payload)));
    });
    group.bench_function("envelope_decode", |b| {
        b.iter(|| {
            let envelope: Envelope = serde_json::from_slice(black_box(&wire)).unwrap();
            envelope.payload_bytes().unwrap()
        });
    });
    group.bench_function("task_serialize", |b| {
        b.iter(|| serde_json::to_vec(black_box(&task)).unwrap());
    });
    group.bench_function("task_deserialize", |b| {
        b.iter(|| serde_json::from_slice::<Task>(black_box(&payload)).unwrap());
    });
    group.bench_function("pae", |b| {
        b.iter(|| pae(TASK_PAYLOAD_TYPE, black_box(&payload)));
    });
    group.finish();
}

fn canonical(c: &mut Criterion) {
    let text = std::fs::read_to_string(LEGACY_VECTORS)
        .unwrap_or_else(|e| panic!("cannot read {LEGACY_VECTORS}: {e}"));
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vector = &vectors["tasks"][1];
    let signable = &vector["signable"];
    assert_eq!(
        to_python_json(signable),
        vector["canonical"].as_str().unwrap(),
        "the vector with escapes and floats"
    );

    let mut group = c.benchmark_group("canonical");
    group.bench_function("to_python_json/legacy_task_1", |b| {
        b.iter(|| to_python_json(black_box(signable)));
    });
    group.bench_function("serde_json_to_string/legacy_task_1", |b| {
        b.iter(|| serde_json::to_string(black_box(signable)).unwrap());
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(100);
    targets = envelope_and_task, canonical
}
criterion_main!(benches);
