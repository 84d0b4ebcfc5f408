//! Signing and verification costs of `sage-crypto`, next to the raw
//! ed25519-dalek operations on the same bytes, so that the overhead of the
//! envelope (PAE, base64, key id lookup) shows as a ratio.
//!
//! Run with `cargo bench -p sage-crypto`.

// Benchmarks are not tests, so clippy.toml's allow-unwrap-in-tests does not
// cover them; a failing unwrap here is a broken setup and should panic.
#![allow(clippy::unwrap_used)]
// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
use sage_crypto::{sign_envelope, verify_envelope, NodeKey, Peer, PeerSource, TrustStore};
use sage_types::task::TASK_PAYLOAD_TYPE;

const SEED: [u8; 32] = [7; 32];

/// A typical delegated task as its issuer serializes it (about 350 bytes).
fn typical_payload() -> Vec<u8> {
    let task = sage_types::testing::typical_task();
    let payload = serde_json::to_vec(&task).unwrap();
    assert!(
        (300..=400).contains(&payload.len()),
        "payload is {} bytes",
        payload.len()
    );
    payload
}

/// A store of `count` peers, the signer among them (inserted last).
fn store_with(count: usize, signer: &NodeKey) -> TrustStore {
    let mut store = TrustStore::default();
    for i in 1..count {
        let other = NodeKey::generate();
        store
            .insert(Peer::new(
                &format!("Peer{i:03}"),
                other.public(),
                PeerSource::Given,
            ))
            .unwrap();
    }
    store
        .insert(Peer::new("Sprout", signer.public(), PeerSource::Given))
        .unwrap();
    assert_eq!(store.len(), count);
    store
}

fn crypto(c: &mut Criterion) {
    let payload = typical_payload();
    let key = NodeKey::from_seed(&SEED);
    let public = key.public();
    let raw = SigningKey::from_bytes(&SEED);
    let raw_public = raw.verifying_key();

    let mut group = c.benchmark_group("crypto");

    // Raw ed25519-dalek on the payload bytes: the baseline.
    group.bench_function("ed25519_raw/sign", |b| {
        b.iter(|| raw.sign(black_box(&payload)));
    });
    let raw_sig = raw.sign(&payload);
    group.bench_function("ed25519_raw/verify_strict", |b| {
        b.iter(|| {
            raw_public
                .verify_strict(black_box(&payload), black_box(&raw_sig))
                .unwrap();
        });
    });
    group.bench_function("ed25519_raw/verify", |b| {
        b.iter(|| {
            raw_public
                .verify(black_box(&payload), black_box(&raw_sig))
                .unwrap();
        });
    });

    // Our key types on the same bytes.
    group.bench_function("NodeKey::sign", |b| {
        b.iter(|| key.sign(black_box(&payload)));
    });
    let sig = key.sign(&payload);
    assert_eq!(sig, raw_sig.to_bytes());
    group.bench_function("PublicKey::verify", |b| {
        b.iter(|| assert!(public.verify(black_box(&payload), black_box(&sig))));
    });

    // Envelopes: PAE over the payload, base64, key id.
    group.bench_function("sign_envelope", |b| {
        b.iter(|| sign_envelope(&key, TASK_PAYLOAD_TYPE, black_box(&payload)));
    });
    let envelope = sign_envelope(&key, TASK_PAYLOAD_TYPE, &payload);
    for peers in [1, 100] {
        let store = store_with(peers, &key);
        let verified = verify_envelope(&envelope, TASK_PAYLOAD_TYPE, &store).unwrap();
        assert_eq!(verified.payload, payload);
        assert_eq!(verified.signer.name, "Sprout");
        group.bench_function(format!("verify_envelope/{peers}_peers"), |b| {
            b.iter(|| verify_envelope(black_box(&envelope), TASK_PAYLOAD_TYPE, &store).unwrap());
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(100);
    targets = crypto
}
criterion_main!(benches);
