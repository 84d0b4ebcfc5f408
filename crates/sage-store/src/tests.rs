//! Tests of the store, on real SQLite files in temporary directories.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::worker::{self, Call, Db, Job, Mode};
use super::*;

fn record(issuer: &str, task_id: &str, nonce: Option<&str>, digest: u8) -> TaskRecord {
    TaskRecord {
        issuer: issuer.to_string(),
        task_id: task_id.to_string(),
        nonce: nonce.map(str::to_string),
        content_digest: [digest; 32],
        envelope: format!("envelope of {task_id}").into_bytes(),
        task_type: "echo".to_string(),
        received_at_ms: 1_000,
        keep_until_ms: 10_000,
    }
}

/// Drops the last clone of `store` and waits for its thread to close the
/// database, as a stopped node would.
async fn close(store: Store) {
    let closer = store.closer();
    assert_eq!(Arc::strong_count(&store.inner), 1, "the last clone");
    drop(store);
    let closed = tokio::task::spawn_blocking(move || closer.wait(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(
        closed,
        "the database thread ends when the last clone is dropped"
    );
}

fn pragma<T: rusqlite::types::FromSql>(path: &Path, name: &str) -> T {
    let conn = Connection::open(path).unwrap();
    conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
        .unwrap()
}

fn entry(peer: &str, task_id: &str, sent_at_ms: u64, status: &str) -> LedgerEntry {
    LedgerEntry {
        id: 0,
        task_id: task_id.to_string(),
        peer: peer.to_string(),
        peer_lct: format!("lct:{peer}"),
        protocol: "native".to_string(),
        task_type: "echo".to_string(),
        sent_at_ms,
        status: status.to_string(),
        latency_ms: None,
        quality: None,
        task: format!("{{\"task\":\"{task_id}\"}}").into_bytes(),
        proof: None,
        proof_task: None,
        error: None,
    }
}

/// A store in a new temporary directory.
fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Offers each task of `cases` in turn: a case is what the task is, the
/// task, and the store's answer expected.
async fn begins(store: &Store, cases: Vec<(&str, TaskRecord, Begin)>) {
    for (what, task, expected) in cases {
        assert_eq!(store.begin_task(task).await.unwrap(), expected, "{what}");
    }
}

/// Begins `task`, which the store has not seen.
async fn start(store: &Store, task: TaskRecord) {
    begins(store, vec![("a new task", task, Begin::Started)]).await;
}

/// Another envelope of `task` (a retry): the same task with another nonce.
fn with_nonce(task: &TaskRecord, nonce: &str) -> TaskRecord {
    TaskRecord {
        nonce: Some(nonce.to_string()),
        ..task.clone()
    }
}

/// `task`, kept until `keep_until_ms`.
fn kept_until(task: TaskRecord, keep_until_ms: u64) -> TaskRecord {
    TaskRecord {
        keep_until_ms,
        ..task
    }
}

/// The answer to a task done with `proof`.
fn done(proof: &[u8]) -> Begin {
    Begin::Done {
        proof: proof.to_vec(),
    }
}

/// Gives alice's `task_id` its `proof` at `now_ms`.
async fn finish(store: &Store, task_id: &str, proof: &[u8], now_ms: u64) {
    store
        .finish_task("alice", task_id, proof.to_vec(), now_ms)
        .await
        .unwrap();
}

#[tokio::test]
async fn open_creates_a_wal_database_at_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").join("node");
    let store = Store::open(&state).unwrap();
    assert_eq!(store.path(), state.join(DB_FILE));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let path = store.path().to_path_buf();
    assert_eq!(pragma::<String>(&path, "journal_mode"), "wal");
    assert_eq!(pragma::<u32>(&path, "user_version"), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 6);
    assert_eq!(
        pragma::<i32>(&path, "application_id"),
        schema::APPLICATION_ID
    );
    close(store).await;
}

#[tokio::test]
async fn the_connection_is_durable_and_checks_foreign_keys() {
    let (_dir, store) = open();
    let (synchronous, foreign_keys, busy) = store
        .call(|db| {
            let get = |name: &str| -> Result<i64, StoreError> {
                db.conn
                    .query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
                    .map_err(|e| db.err(e))
            };
            Ok((
                get("synchronous")?,
                get("foreign_keys")?,
                get("busy_timeout")?,
            ))
        })
        .await
        .unwrap();
    // NORMAL, with the log synced after each durable commit instead.
    assert_eq!(synchronous, 1, "NORMAL");
    assert_eq!(foreign_keys, 1);
    assert!(busy > 0);
    let guard = store.inner.shared.lock();
    let owner = guard.as_ref().unwrap();
    assert!(
        matches!(&owner.sync, worker::LogSync::Log { file: Some(_), .. }),
        "the log was synced: {:?}",
        owner.sync
    );
}

/// An overlapped begin is committed, and its sync runs apart: the wait
/// returns once the log was synced after it; concurrent ones share syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapped_begin_is_synced_apart_and_waited_for() {
    let (_dir, store) = open();
    let (begun, synced) = store
        .begin_task_overlapped(record("a", "t1", Some("n1"), 1))
        .await
        .unwrap();
    assert_eq!(begun, Begin::Started);
    assert!(synced.pending(), "a sync to wait for");
    synced.wait().await.unwrap();
    assert!(store.inner.syncer.synced() >= 1);

    let mut begins = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        begins.push(tokio::spawn(async move {
            let (begun, synced) = store
                .begin_task_overlapped(record("a", &format!("t-{i}"), Some(&format!("n-{i}")), 1))
                .await
                .unwrap();
            synced.wait().await.unwrap();
            begun
        }));
    }
    for begun in begins {
        assert_eq!(begun.await.unwrap(), Begin::Started);
    }
    assert_eq!(store.inner.syncer.synced(), 17, "every ticket covered");

    // A retry is answered from the record, synced as well.
    let (begun, synced) = store
        .begin_task_overlapped(record("a", "t1", Some("n1"), 1))
        .await
        .unwrap();
    assert_eq!(begun, Begin::Replayed);
    synced.wait().await.unwrap();
}

/// A sync that fails answers its waiters with the error, and the next
/// request is tried again rather than left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_sync_is_reported_to_its_waiters() {
    let dir = tempfile::tempdir().unwrap();
    // No log there: opening it fails, as a sync of a broken disk would.
    let syncer = super::log_sync::Syncer::new(dir.path().join("missing.db"));
    for _ in 0..2 {
        let waits: Vec<_> = (0..4).map(|_| syncer.request()).collect();
        for synced in waits {
            assert!(matches!(synced.wait().await, Err(StoreError::Sync { .. })));
        }
    }
    assert_eq!(syncer.synced(), 0);
}

#[tokio::test]
async fn an_overlapped_begin_without_durable_commits_waits_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), Durability::Crash, Check::Header).unwrap();
    let (begun, synced) = store
        .begin_task_overlapped(record("a", "t1", Some("n1"), 1))
        .await
        .unwrap();
    assert_eq!(begun, Begin::Started);
    assert!(!synced.pending());
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_string()
}

#[tokio::test]
async fn on_a_current_thread_runtime_jobs_go_to_the_database_thread() {
    let (_dir, store) = open();
    let name = store.call(|_| Ok(thread_name())).await.unwrap();
    assert_eq!(name, "sage-store");
}

/// A lone job commits on its caller's thread; jobs that come while the
/// connection is taken wait in the queue and are committed together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_job_commits_on_its_callers_thread_and_waiting_ones_together() {
    let (_dir, store) = open();
    let lone = store.call(|_| Ok(thread_name())).await.unwrap();
    assert_ne!(lone, "sage-store");

    // A leader that holds the connection until the others wait.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, leading) = tokio::sync::oneshot::channel();
    let leader = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .call(move |_| {
                    let _ = started.send(());
                    let _ = held.recv();
                    Ok(thread_name())
                })
                .await
        })
    };
    leading.await.unwrap();
    let waiting = 8;
    let mut others = Vec::new();
    for i in 0..waiting {
        let store = store.clone();
        others.push(tokio::spawn(async move {
            let queue = store.inner.jobs.clone();
            store
                .call(move |db| {
                    insert_nonce(db, &format!("n{i}"))?;
                    // Empty: every job was taken before the first ran.
                    Ok((thread_name(), queue.capacity() == queue.max_capacity()))
                })
                .await
        }));
    }
    // The thread took one job and waits for the connection; the rest queue.
    let jobs = &store.inner.jobs;
    while !(store
        .inner
        .shared
        .thread_waits
        .load(std::sync::atomic::Ordering::Acquire)
        && jobs.max_capacity() - jobs.capacity() == waiting - 1)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    release.send(()).unwrap();
    assert_ne!(leader.await.unwrap().unwrap(), "sage-store");
    for other in others {
        let (name, alone_in_queue) = other.await.unwrap().unwrap();
        assert_eq!(name, "sage-store");
        assert!(alone_in_queue, "one batch");
    }
}

#[tokio::test]
async fn reopening_keeps_the_data() {
    let (dir, store) = open();
    let first = record("alice", "t1", Some("n1"), 1);
    start(&store, first.clone()).await;
    finish(&store, "t1", b"proof-1", 2_000).await;
    let id = store
        .record_delegation(entry("bob", "d1", 5, "succeeded"))
        .await
        .unwrap();
    close(store).await;

    let store = Store::open(dir.path()).unwrap();
    let retry = with_nonce(&first, "n2");
    begins(&store, vec![("a retry", retry, done(b"proof-1"))]).await;
    let ledger = store.ledger(None, None).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].id, id);
    assert_eq!(ledger[0].task_id, "d1");
    close(store).await;
}

#[tokio::test]
async fn begin_then_finish_then_a_retry_gets_the_same_proof() {
    let (_dir, store) = open();
    let task = record("alice", "t1", Some("n1"), 7);
    // A retry (new envelope, new nonce) while it runs.
    let retry = with_nonce(&task, "n2");
    begins(
        &store,
        vec![
            ("the first envelope", task.clone(), Begin::Started),
            ("a retry while it runs", retry.clone(), Begin::Running),
        ],
    )
    .await;

    finish(&store, "t1", b"signed proof", 1_500).await;
    let bare = TaskRecord {
        nonce: None,
        ..task.clone()
    };
    begins(
        &store,
        vec![
            (
                "a retry once done",
                with_nonce(&task, "n3"),
                done(b"signed proof"),
            ),
            // Without a nonce (the legacy protocol) too.
            ("a retry without a nonce", bare, done(b"signed proof")),
            // The retry's nonce was recorded: its envelope cannot come back.
            ("the retry's envelope again", retry, Begin::Replayed),
        ],
    )
    .await;

    // Finishing again: the same bytes are fine, others are refused.
    finish(&store, "t1", b"signed proof", 1_600).await;
    let other = store
        .finish_task("alice", "t1", b"another proof".to_vec(), 1_600)
        .await
        .unwrap_err();
    assert!(matches!(other, StoreError::WrongState { .. }), "{other}");
    // Unknown tasks.
    let unknown = store
        .finish_task("alice", "nope", b"p".to_vec(), 1_600)
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, StoreError::UnknownTask { .. }),
        "{unknown}"
    );
    assert!(unknown.to_string().contains("begin_task"), "{unknown}");
}

#[tokio::test]
async fn the_log_is_copied_into_the_database_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), Durability::Crash, Check::Whole).unwrap();
    let db = dir.path().join(DB_FILE);
    let before = std::fs::metadata(&db).unwrap().len();
    // Two commits per task, a few pages each: several background
    // checkpoints, and far from the writer's own threshold (4000 pages).
    let tasks = 2 * checkpoint::COMMITS_PER_CHECKPOINT as usize;
    let envelope = vec![b'e'; 2000];
    for i in 0..tasks {
        let task_id = format!("t{i:05}");
        let task = TaskRecord {
            envelope: envelope.clone(),
            ..record("alice", &task_id, Some(&format!("n{i}")), 7)
        };
        start(&store, task).await;
        finish(&store, &task_id, &[b'p'; 1000], 2_000).await;
    }
    // The envelopes alone are 2000 bytes each: most of them must be in
    // the database file itself, not only in the log.
    let wanted = before + (tasks as u64 / 2) * 2000;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut size = std::fs::metadata(&db).unwrap().len();
    while size < wanted && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        size = std::fs::metadata(&db).unwrap().len();
    }
    assert!(
        size >= wanted,
        "database file {size} bytes (was {before}): the log was not checkpointed"
    );
    close(store).await;
}

#[tokio::test]
async fn the_same_task_id_with_another_digest_is_a_conflict() {
    let (_dir, store) = open();
    begins(
        &store,
        vec![
            ("t1", record("alice", "t1", Some("n1"), 1), Begin::Started),
            (
                "t1 with another digest",
                record("alice", "t1", Some("n2"), 2),
                Begin::Conflict,
            ),
            // A refusal records no nonce: n2 may still bring the right task.
            (
                "the refused nonce with the right task",
                record("alice", "t1", Some("n2"), 1),
                Begin::Running,
            ),
            // Another issuer's task ids are its own.
            (
                "another issuer's t1",
                record("bob", "t1", Some("n1"), 2),
                Begin::Started,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn an_envelope_is_refused_again_also_after_a_restart() {
    let (dir, store) = open();
    let first = record("alice", "t1", Some("n1"), 1);
    // A retry: another envelope (nonce) of the same task.
    let retry = record("alice", "t1", Some("n2"), 1);
    begins(
        &store,
        vec![
            ("the first envelope", first.clone(), Begin::Started),
            ("the first envelope again", first.clone(), Begin::Replayed),
            ("a retry", retry.clone(), Begin::Running),
        ],
    )
    .await;
    close(store).await;

    let store = Store::open(dir.path()).unwrap();
    begins(
        &store,
        vec![
            // Both envelopes are still refused: the first nonce is in the
            // task's row, the retry's in `nonces`.
            ("the first envelope", first, Begin::Replayed),
            ("the retry", retry, Begin::Replayed),
            // The same nonce from another issuer is another envelope.
            (
                "another issuer's nonce n1",
                record("bob", "t1", Some("n1"), 1),
                Begin::Started,
            ),
            // So is a task of the same issuer that happens to use the same
            // nonce: its envelope was signed for that task id, so it
            // replays nothing.
            (
                "another task with nonce n1",
                record("alice", "t2", Some("n1"), 2),
                Begin::Started,
            ),
        ],
    )
    .await;
    close(store).await;
}

#[tokio::test]
async fn an_expired_nonce_is_pruned_then_the_envelope_gets_the_stored_answer() {
    let (_dir, store) = open();
    let first = kept_until(record("alice", "t1", Some("n1"), 1), 5_000);
    let retry = kept_until(record("alice", "t1", Some("n2"), 1), 5_000);
    let other = kept_until(record("alice", "t2", Some("n3"), 2), 50_000);
    let other_retry = kept_until(record("alice", "t2", Some("n4"), 2), 50_000);
    begins(
        &store,
        vec![
            ("t1", first.clone(), Begin::Started),
            ("a retry of t1", retry.clone(), Begin::Running),
            ("t2", other, Begin::Started),
            ("a retry of t2", other_retry, Begin::Running),
        ],
    )
    .await;

    // Kept until 5000 inclusive.
    assert_eq!(store.prune(5_000).await.unwrap(), 0);
    for envelope in [&first, &retry] {
        let mut at_limit = envelope.clone();
        at_limit.received_at_ms = 5_000;
        assert_eq!(store.begin_task(at_limit).await.unwrap(), Begin::Replayed);
    }

    // The retry's nonce (n2) goes; n4 is kept until 50000.
    assert_eq!(store.prune(5_001).await.unwrap(), 1);
    assert_eq!(store.prune(5_001).await.unwrap(), 0);
    // Past its time, an envelope of the task is no replay (a node refuses it
    // as expired before the store sees it); the store answers as to a retry.
    finish(&store, "t1", b"p1", 5_500).await;
    for envelope in [first, retry] {
        let mut later = envelope;
        later.received_at_ms = 6_000;
        later.keep_until_ms = 20_000;
        assert_eq!(store.begin_task(later).await.unwrap(), done(b"p1"));
    }
    let mut again = record("alice", "t1", Some("n2"), 1);
    again.received_at_ms = 7_000;
    // n2 is remembered anew, until 20000.
    assert_eq!(store.begin_task(again).await.unwrap(), Begin::Replayed);
}

#[tokio::test]
async fn finished_tasks_are_forgotten_after_their_time_oldest_first() {
    let (_dir, store) = open();
    // t0..t3 kept until 10000, t4 until 90000; t1 is still running.
    for i in 0..5u64 {
        let task_id = format!("t{i}");
        let mut task = record("alice", &task_id, Some(&format!("n{i}")), 1);
        task.received_at_ms = 1_000 + i;
        if i == 4 {
            task.keep_until_ms = 90_000;
        }
        start(&store, task).await;
        if i != 1 {
            finish(&store, &task_id, format!("p{i}").as_bytes(), 2_000).await;
        }
    }
    assert_eq!(store.replay_guard_size().await.unwrap(), 5);

    // Kept until 10000 inclusive.
    assert_eq!(store.prune_tasks(10_000).await.unwrap(), 0);
    assert_eq!(store.prune_tasks(10_001).await.unwrap(), 3, "t0, t2, t3");
    assert_eq!(store.prune_tasks(10_001).await.unwrap(), 0);
    // t1..t4 span four row numbers: the bound counts none that is gone.
    assert_eq!(store.replay_guard_size().await.unwrap(), 4);

    let again = |task_id: &str, nonce: &str| {
        let mut task = record("alice", task_id, Some(nonce), 1);
        task.received_at_ms = 20_000;
        task.keep_until_ms = 30_000;
        task
    };
    // A forgotten task, re-signed, is a new task; the others are answered
    // from their records.
    begins(
        &store,
        vec![
            ("forgotten t0", again("t0", "m0"), Begin::Started),
            ("running t1", again("t1", "m1"), Begin::Running),
            ("kept t4", again("t4", "m4"), done(b"p4")),
        ],
    )
    .await;
    // Interrupted tasks go too; running ones never.
    assert_eq!(store.interrupt_running(25_000).await.unwrap(), 2);
    assert_eq!(store.prune_tasks(u64::MAX / 2).await.unwrap(), 3);
    // The retries' nonces (m1, m4) are kept until their own time.
    assert_eq!(store.replay_guard_size().await.unwrap(), 2);
}

/// Begins and finishes the tasks `t<i>` of alice, each kept until 1.
async fn finish_tasks(store: &Store, numbers: std::ops::Range<u64>) {
    for i in numbers {
        let task_id = format!("t{i:05}");
        start(store, record("alice", &task_id, Some(&task_id), 1)).await;
        finish(store, &task_id, b"p", 2_000).await;
    }
}

#[tokio::test]
async fn pruning_tasks_looks_at_the_oldest_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), Durability::Crash, Check::Whole).unwrap();
    let tasks = PRUNE_TASKS_LIMIT as u64 + 10;
    finish_tasks(&store, 0..tasks).await;
    assert_eq!(
        store.prune_oldest_tasks(10_001).await.unwrap(),
        u64::from(PRUNE_TASKS_LIMIT)
    );
    assert_eq!(store.prune_oldest_tasks(10_001).await.unwrap(), 10);
    assert_eq!(store.replay_guard_size().await.unwrap(), 0);
    // The whole of it, one transaction after another.
    finish_tasks(&store, tasks..2 * tasks + 5).await;
    assert_eq!(store.prune_tasks(10_001).await.unwrap(), tasks + 5);
    assert_eq!(store.replay_guard_size().await.unwrap(), 0);
}

#[tokio::test]
async fn an_interrupted_task_gets_its_interruption_proof() {
    let (dir, store) = open();
    let task = record("alice", "t1", Some("n1"), 1);
    start(&store, task.clone()).await;
    start(&store, record("alice", "t2", Some("n2"), 2)).await;
    finish(&store, "t2", b"p2", 1_100).await;
    // Too early: t1 is running.
    let early = store
        .set_proof_of_interrupted("alice", "t1", b"x".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(early, StoreError::WrongState { .. }), "{early}");
    // The node dies while t1 runs.
    close(store).await;

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.interrupt_running(3_000).await.unwrap(), 1);
    assert_eq!(store.interrupt_running(3_001).await.unwrap(), 0);
    let retry = with_nonce(&task, "n3");
    assert_eq!(store.begin_task(retry).await.unwrap(), Begin::Interrupted);

    store
        .set_proof_of_interrupted("alice", "t1", b"interrupted proof".to_vec())
        .await
        .unwrap();
    // Idempotent with the same bytes.
    store
        .set_proof_of_interrupted("alice", "t1", b"interrupted proof".to_vec())
        .await
        .unwrap();
    let retry = with_nonce(&task, "n4");
    assert_eq!(
        store.begin_task(retry).await.unwrap(),
        done(b"interrupted proof")
    );
    let state: String = store
        .call(|db| {
            db.conn
                .query_row(
                    "SELECT state FROM tasks WHERE issuer = 'alice' AND task_id = 't1'",
                    [],
                    |row| row.get(0),
                )
                .map_err(|e| db.err(e))
        })
        .await
        .unwrap();
    assert_eq!(state, "interrupted");
    // A done task is not interrupted.
    let done = store
        .set_proof_of_interrupted("alice", "t2", b"x".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(done, StoreError::WrongState { .. }), "{done}");
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_begins_of_one_task_start_it_once() {
    let (_dir, store) = open();
    let mut handles = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            // Retries of one task: each its own envelope and nonce.
            let task = record("alice", "t1", Some(&format!("n{i}")), 9);
            let begin = store.begin_task(task).await.unwrap();
            if begin == Begin::Started {
                store
                    .finish_task("alice", "t1", b"the proof".to_vec(), 2_000)
                    .await
                    .unwrap();
            }
            begin
        }));
    }
    let mut started = 0;
    for handle in handles {
        match handle.await.unwrap() {
            Begin::Started => started += 1,
            Begin::Running => {}
            Begin::Done { proof } => assert_eq!(proof, b"the proof"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
    // The first envelope's nonce is in the task's row; the 19 retries' in
    // `nonces`.
    let nonces: i64 = store
        .call(|db| {
            db.conn
                .query_row("SELECT count(*) FROM nonces", [], |row| row.get(0))
                .map_err(|e| db.err(e))
        })
        .await
        .unwrap();
    assert_eq!(nonces, 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_done_returns_the_proof_when_it_comes_or_none_in_time() {
    let (_dir, store) = open();
    start(&store, record("alice", "t1", Some("n1"), 1)).await;

    // Nothing comes.
    let none = store
        .wait_done("alice", "t1", Duration::from_millis(120))
        .await
        .unwrap();
    assert_eq!(none, None);

    // The proof comes while a waiter waits.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_done("alice", "t1", Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    finish(&store, "t1", b"the proof", 2_000).await;
    let proof = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter is woken")
        .unwrap()
        .unwrap();
    assert_eq!(proof, Some(Ended::Proof(b"the proof".to_vec())));
    // Once done, no wait.
    assert_eq!(
        store
            .wait_done("alice", "t1", Duration::ZERO)
            .await
            .unwrap(),
        Some(Ended::Proof(b"the proof".to_vec()))
    );
    assert!(store.inner.waiters.lock().is_empty(), "waiters are removed");
    // No such task.
    let unknown = store
        .wait_done("alice", "nope", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, StoreError::UnknownTask { .. }),
        "{unknown}"
    );
}

#[tokio::test]
async fn wait_done_sees_a_proof_stored_by_another_connection() {
    let (_dir, store) = open();
    start(&store, record("alice", "t1", None, 1)).await;
    let path = store.path().to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(30));
        let conn = Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute(
            "UPDATE tasks SET state = 'done', proof = x'0102' WHERE task_id = 't1'",
            [],
        )
        .unwrap();
    });
    let proof = store
        .wait_done("alice", "t1", Duration::from_secs(30))
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(proof, Some(Ended::Proof(vec![1, 2])));
}

#[tokio::test]
async fn the_ledger_lists_by_peer_and_time() {
    let (_dir, store) = open();
    let mut first = entry("Bob", "d1", 100, "succeeded");
    first.latency_ms = Some(12.5);
    first.quality = Some(0.9);
    first.proof = Some(b"{\"proof\":1}".to_vec());
    let id1 = store.record_delegation(first.clone()).await.unwrap();
    let mut failed = entry("carol", "d2", 200, "unreachable");
    failed.error = Some("connection refused".to_string());
    let id2 = store.record_delegation(failed.clone()).await.unwrap();
    // Recorded out of order: listed by time.
    let id3 = store
        .record_delegation(entry("bob", "d3", 50, "refused"))
        .await
        .unwrap();
    let id4 = store
        .record_delegation(entry("bob", "d1", 300, "succeeded"))
        .await
        .unwrap();
    assert!(id1 > 0 && id2 > id1 && id3 > id2 && id4 > id3);

    let all = store.ledger(None, None).await.unwrap();
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![id3, id1, id2, id4]);
    assert_eq!(all[1], LedgerEntry { id: id1, ..first });
    assert_eq!(all[2], LedgerEntry { id: id2, ..failed });

    for (what, peer, since, expected) in [
        ("bob, any case", Some("BOB"), None, vec![id3, id1, id4]),
        ("bob since 100", Some("bob"), Some(100), vec![id1, id4]),
        ("anyone since 150", None, Some(150), vec![id2, id4]),
        ("nobody's", Some("dave"), None, vec![]),
    ] {
        let ids: Vec<i64> = store
            .ledger(peer.map(str::to_string), since)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, expected, "{what}");
    }

    // The latest entry that holds a proof, before later ones without.
    for (task_id, expected) in [("d1", Some(id1)), ("d3", Some(id3)), ("zz", None)] {
        let latest = store.ledger_entry(task_id.to_string()).await.unwrap();
        assert_eq!(latest.map(|e| e.id), expected, "{task_id}");
    }
}

#[tokio::test]
async fn the_attempts_of_a_delegation_are_its_task_ids_entries_oldest_first() {
    let (_dir, store) = open();
    let late = store
        .record_delegation(entry("sprout", "d1", 300, "succeeded"))
        .await
        .unwrap();
    let early = store
        .record_delegation(entry("thor", "d1", 100, "unreachable"))
        .await
        .unwrap();
    store
        .record_delegation(entry("thor", "d2", 200, "succeeded"))
        .await
        .unwrap();
    let ids: Vec<i64> = store
        .ledger_attempts("d1".into())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![early, late]);
    assert!(store.ledger_attempts("zz".into()).await.unwrap().is_empty());
}

#[tokio::test]
async fn kept_capabilities_are_given_until_they_expire_and_replaced_by_newer() {
    let (_dir, store) = open();
    let peer = || "thor_sage_lct".to_string();
    assert_eq!(store.capabilities(peer(), 0).await.unwrap(), None);
    store
        .put_capabilities(peer(), b"one".to_vec(), 1_000)
        .await
        .unwrap();
    assert_eq!(
        store.capabilities(peer(), 999).await.unwrap(),
        Some(b"one".to_vec())
    );
    assert_eq!(store.capabilities(peer(), 1_000).await.unwrap(), None);
    store
        .put_capabilities(peer(), b"two".to_vec(), 2_000)
        .await
        .unwrap();
    assert_eq!(
        store.capabilities(peer(), 1_500).await.unwrap(),
        Some(b"two".to_vec())
    );
    assert_eq!(store.capabilities("other".into(), 0).await.unwrap(), None);
}

#[tokio::test]
async fn a_delegation_is_recorded_sent_then_closed_once_with_its_outcome() {
    let (_dir, store) = open();
    let id = store
        .open_delegation(entry("bob", "d1", 100, "ignored"))
        .await
        .unwrap();
    let listed = store.ledger(None, None).await.unwrap();
    assert_eq!(listed[0].status, SENT);
    assert_eq!(listed[0].task_id, "d1");
    assert!(
        store.peer_stats().await.unwrap().is_empty(),
        "counted at its outcome"
    );

    let outcome = Outcome {
        status: "succeeded".into(),
        latency_ms: Some(7.0),
        quality: Some(0.5),
        proof: Some(b"{\"proof\":1}".to_vec()),
        proof_task: Some(b"{\"task\":\"earlier\"}".to_vec()),
        error: None,
    };
    store.close_delegation(id, outcome.clone()).await.unwrap();
    let closed = &store.ledger(None, None).await.unwrap()[0];
    assert_eq!(
        (closed.status.as_str(), closed.latency_ms, closed.quality),
        ("succeeded", Some(7.0), Some(0.5))
    );
    assert_eq!(closed.proof, outcome.proof);
    assert_eq!(closed.proof_task, outcome.proof_task);
    assert_eq!(closed.task, b"{\"task\":\"d1\"}");
    let stats = store.peer_stats().await.unwrap();
    assert_eq!(stats[0].by_status.get("succeeded"), Some(&1));

    // Closed once: a second outcome, or an unknown id, changes nothing.
    for id in [id, id + 1] {
        let err = store
            .close_delegation(id, Outcome::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::UnknownDelegation { .. }), "{err}");
    }
    assert_eq!(&store.ledger(None, None).await.unwrap()[0], closed);
}

#[tokio::test]
async fn peer_stats_count_by_status_and_average_the_latest_most() {
    let (_dir, store) = open();
    let latencies = [100.0, 200.0, 50.0];
    for (i, latency) in latencies.iter().enumerate() {
        let mut e = entry("bob", &format!("d{i}"), 1_000 + i as u64, "succeeded");
        e.latency_ms = Some(*latency);
        e.quality = Some(1.0 - i as f64 * 0.25);
        store.record_delegation(e).await.unwrap();
    }
    // No latency nor quality: counted, not averaged.
    store
        .record_delegation(entry("BOB", "d9", 900, "unreachable"))
        .await
        .unwrap();
    let mut nan = entry("bob", "d10", 950, "invalid_proof");
    nan.latency_ms = Some(f64::NAN);
    store.record_delegation(nan).await.unwrap();
    store
        .record_delegation(entry("alice", "a1", 10, "refused"))
        .await
        .unwrap();

    let stats = store.peer_stats().await.unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].peer, "alice");
    assert_eq!(stats[0].by_status.get("refused"), Some(&1));
    assert_eq!(stats[0].latency_ms_ewma, None);
    assert_eq!(stats[0].quality_ewma, None);
    assert_eq!(stats[0].last_seen_ms, Some(10));

    let bob = &stats[1];
    assert_eq!(bob.peer, "bob");
    let counts: Vec<(&str, u64)> = bob
        .by_status
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        counts,
        vec![("invalid_proof", 1), ("succeeded", 3), ("unreachable", 1)]
    );
    let ewma = |values: &[f64]| {
        values[1..].iter().fold(values[0], |avg, v| {
            EWMA_ALPHA * v + (1.0 - EWMA_ALPHA) * avg
        })
    };
    let latency = bob.latency_ms_ewma.unwrap();
    assert!((latency - ewma(&latencies)).abs() < 1e-9, "{latency}");
    assert!((latency - 106.0).abs() < 1e-9, "{latency}"); // 100, then 120, then 106
    let quality = bob.quality_ewma.unwrap();
    assert!(
        (quality - ewma(&[1.0, 0.75, 0.5])).abs() < 1e-9,
        "{quality}"
    );
    assert_eq!(bob.last_seen_ms, Some(1_002));
    // The NaN latency is stored as none.
    let stored = store
        .ledger_entry("d10".to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.latency_ms, None);
    // And serializes.
    let json = serde_json::to_string(bob).unwrap();
    assert!(json.contains("\"succeeded\":3"), "{json}");
}

#[tokio::test]
async fn a_version_1_database_is_migrated_and_keeps_its_data() {
    migrated_keeps_its_data(1).await;
}

#[tokio::test]
async fn a_version_2_database_is_migrated_and_keeps_its_data() {
    migrated_keeps_its_data(2).await;
}

/// A database of schema `version` with a finished task and a retry's
/// nonce, opened by this code: migrated, same answers.
async fn migrated_keeps_its_data(version: u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let conn = schema::open(&path, version, Check::Whole).unwrap();
        assert_eq!(
            conn.query_row("PRAGMA user_version", [], |row| row.get::<_, u32>(0))
                .unwrap(),
            version
        );
        conn.execute(
            "INSERT INTO tasks (issuer, task_id, content_digest, envelope, task_type, state, received_at_ms, proof)
             VALUES ('alice', 'old', ?1, x'00', 'echo', 'done', 5, x'aa')",
            [&[3u8; 32][..]],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO nonces (issuer, nonce, keep_until_ms) VALUES ('alice', 'n-old', 99999)",
            [],
        )
        .unwrap();
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'nonces_by_expiry'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(index, i64::from(version >= 2));
    }

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(pragma::<u32>(&path, "user_version"), SCHEMA_VERSION);
    let indexes: i64 = store
        .call(|db| {
            db.conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master
                     WHERE name IN ('nonces_by_expiry', 'tasks_running')",
                    [],
                    |row| row.get(0),
                )
                .map_err(|e| db.err(e))
        })
        .await
        .unwrap();
    assert_eq!(indexes, 2);
    let received_at_10 = |nonce: &str| TaskRecord {
        received_at_ms: 10,
        ..record("alice", "old", Some(nonce), 3)
    };
    // New tasks keep their nonce in their row.
    let fresh = record("alice", "new", Some("n-fresh"), 5);
    begins(
        &store,
        vec![
            (
                "a retry of the old task",
                received_at_10("n-new"),
                done(&[0xaa]),
            ),
            // An envelope of the old task seen before the migration: its
            // nonce is in `nonces` (the old row has none of its own).
            (
                "an envelope seen before",
                received_at_10("n-old"),
                Begin::Replayed,
            ),
            ("a new task", fresh.clone(), Begin::Started),
            ("the new task again", fresh, Begin::Replayed),
        ],
    )
    .await;
    close(store).await;
}

#[tokio::test]
async fn a_database_from_a_newer_sage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    close(Store::open(dir.path()).unwrap()).await;
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 7").unwrap();
    }
    let error = Store::open(dir.path()).unwrap_err();
    match &error {
        StoreError::TooNew {
            path: p,
            found,
            supported,
        } => {
            assert_eq!(p, &path);
            assert_eq!((*found, *supported), (7, SCHEMA_VERSION));
        }
        other => panic!("unexpected {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("upgrade sage"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert_eq!(pragma::<u32>(&path, "user_version"), 7, "left as it is");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_corrupt_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    let error = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt { path: p, .. } if p == &path),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("left untouched"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
    assert!(!dir.path().join("sage.db-wal").exists());

    // A short text file too.
    std::fs::write(&path, b"hello").unwrap();
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"hello");
}

#[tokio::test]
async fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY, data BLOB)")
            .unwrap();
    }
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA application_id = 1234").unwrap();
    }
    let error = Store::open(dir.path()).unwrap_err();
    assert!(error.to_string().contains("another program"), "{error}");
}

/// A closed database in `dir` holding 200 ledger entries: its file, and
/// the file's bytes with the pages from `from_page` on scrambled (written
/// back); `from_page` counts back from the end when negative.
async fn damaged_ledger(dir: &Path, from_page: isize) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join(DB_FILE);
    let store = Store::open(dir).unwrap();
    for i in 0..200 {
        let mut e = entry("bob", &format!("d{i}"), i, "succeeded");
        e.task = vec![i as u8; 500];
        store.record_delegation(e).await.unwrap();
    }
    // Closing checkpoints the log into the file.
    close(store).await;
    let mut bytes = std::fs::read(&path).unwrap();
    let page_size = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    let pages = (bytes.len() / page_size) as isize;
    assert!(pages > 8);
    let from = if from_page < 0 {
        pages + from_page
    } else {
        from_page
    };
    for byte in bytes[from as usize * page_size..].iter_mut() {
        *byte = byte.wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

#[tokio::test]
async fn a_damaged_page_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    // Every page past the schema's, keeping the header.
    let (path, bytes) = damaged_ledger(dir.path(), 2).await;
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn a_header_check_opens_a_damaged_file_and_reports_the_damage_when_read() {
    let dir = tempfile::tempdir().unwrap();
    // The last pages: the ledger's rows, not the schema.
    let (path, bytes) = damaged_ledger(dir.path(), -4).await;

    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    let store = Store::open_with(dir.path(), Durability::PowerLoss, Check::Header).unwrap();
    let error = store.ledger(None, None).await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    close(store).await;
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "left untouched");
}

#[test]
fn the_state_directory_cannot_be_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let error = Store::open(&file.join("state")).unwrap_err();
    assert!(matches!(error, StoreError::CreateDir { .. }), "{error:?}");
}

/// A job that writes a row, then fails or succeeds.
fn insert_job(
    nonce: &'static str,
    fail: bool,
) -> (
    Box<dyn Job>,
    tokio::sync::oneshot::Receiver<Result<(), StoreError>>,
) {
    let (call, reply) = Call::new(
        move |db: &Db<'_>| {
            insert_nonce(db, nonce)?;
            if fail {
                // A constraint violation, after the write above.
                insert_nonce(db, nonce)?;
            }
            Ok(())
        },
        Mode {
            durable: true,
            savepoint: true,
        },
    );
    (Box::new(call), reply)
}

fn insert_nonce(db: &Db<'_>, nonce: &str) -> Result<usize, StoreError> {
    db.conn
        .execute(
            "INSERT INTO nonces (issuer, nonce, keep_until_ms) VALUES ('x', ?1, 1)",
            [nonce],
        )
        .map_err(|e| db.err(e))
}

#[test]
fn one_failing_job_does_not_fail_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let conn = schema::open(&path, SCHEMA_VERSION, Check::Whole).unwrap();
    let (a, reply_a) = insert_job("a", false);
    let (b, reply_b) = insert_job("b", true);
    let (c, reply_c) = insert_job("c", false);
    let (d, reply_d) = Call::new(
        |_: &Db<'_>| -> Result<(), StoreError> { panic!("a bug") },
        Mode {
            durable: true,
            savepoint: true,
        },
    );
    let mut batch: Vec<Box<dyn Job>> = vec![a, b, Box::new(d), c];
    worker::run_batch(&conn, &path, &mut batch, &mut Default::default());
    assert!(batch.is_empty());
    assert!(reply_a.blocking_recv().unwrap().is_ok());
    assert!(matches!(
        reply_b.blocking_recv().unwrap(),
        Err(StoreError::Database { .. })
    ));
    assert!(matches!(
        reply_d.blocking_recv().unwrap(),
        Err(StoreError::Internal { .. })
    ));
    assert!(reply_c.blocking_recv().unwrap().is_ok());
    assert!(conn.is_autocommit(), "committed");
    let mut stmt = conn
        .prepare("SELECT nonce FROM nonces ORDER BY nonce")
        .unwrap();
    let nonces: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // b's first insert was rolled back with its savepoint.
    assert_eq!(nonces, vec!["a", "c"]);
}

#[tokio::test]
async fn a_closer_waits_no_longer_than_it_is_told() {
    let (_dir, store) = open();
    let closer = store.closer();
    // The store is alive, so its thread runs on: the wait gives up.
    let closed = tokio::task::spawn_blocking(move || closer.wait(Duration::from_millis(50)))
        .await
        .unwrap();
    assert!(!closed);
    // The thread was taken: another closer has nothing to wait for.
    assert!(store.closer().wait(Duration::ZERO));
    assert_eq!(store.prune(0).await.unwrap(), 0, "the store still works");
}

#[tokio::test]
async fn the_thread_stops_with_the_last_clone() {
    let (dir, store) = open();
    let clone = store.clone();
    drop(store);
    assert_eq!(clone.prune(0).await.unwrap(), 0, "a clone keeps it running");
    close(clone).await;
    // The WAL was checkpointed and removed when the connection closed.
    assert!(!dir.path().join("sage.db-wal").exists());
}

#[tokio::test]
async fn an_interrupted_run_wakes_its_waiters_and_is_interrupted_once() {
    let (_dir, store) = open();
    store
        .begin_task(record("alice", "t1", None, 1))
        .await
        .unwrap();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_done("alice", "t1", Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(store.interrupt_task("alice", "t1", 2_000).await.unwrap());
    let ended = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter is woken")
        .unwrap()
        .unwrap();
    assert_eq!(ended, Some(Ended::Interrupted));
    // Not running any more: nothing to interrupt, and a retry is told so.
    assert!(!store.interrupt_task("alice", "t1", 3_000).await.unwrap());
    assert_eq!(
        store
            .begin_task(record("alice", "t1", None, 1))
            .await
            .unwrap(),
        Begin::Interrupted
    );
}

#[tokio::test]
async fn one_node_per_state_directory_and_short_commands_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Store::open(dir.path()).unwrap();
    let second = Store::open(dir.path()).unwrap_err();
    assert!(matches!(second, StoreError::Locked { .. }), "{second}");
    // A short command's store works beside it, and cannot touch the
    // node's running tasks.
    let short = Store::open_shared(dir.path()).unwrap();
    node.begin_task(record("alice", "t1", None, 1))
        .await
        .unwrap();
    let refused = short.interrupt_running(2_000).await.unwrap_err();
    assert!(matches!(refused, StoreError::NotLocked { .. }), "{refused}");
    assert_eq!(
        node.begin_task(record("alice", "t1", None, 1))
            .await
            .unwrap(),
        Begin::Running,
        "still running"
    );
    assert_eq!(node.interrupt_running(2_000).await.unwrap(), 1);
}

#[tokio::test]
async fn a_legacy_task_is_forgotten_at_its_deadline_and_the_skew() {
    let (_dir, store) = open();
    // Legacy records have no nonce; keep_until_ms is the deadline plus the skew.
    let legacy = record("alice", "t1#aa", None, 1);
    let native = record("alice", "t2", Some("n2"), 2);
    for r in [&legacy, &native] {
        assert_eq!(store.begin_task(r.clone()).await.unwrap(), Begin::Started);
        store
            .finish_task("alice", &r.task_id, b"proof".to_vec(), 2_000)
            .await
            .unwrap();
    }
    assert_eq!(store.prune(10_000).await.unwrap(), 0, "kept until 10000");
    assert!(matches!(
        store.begin_task(legacy.clone()).await.unwrap(),
        Begin::Done { .. }
    ));
    assert_eq!(
        store.prune(10_001).await.unwrap(),
        1,
        "only the legacy task"
    );
    assert_eq!(store.begin_task(legacy).await.unwrap(), Begin::Started);
    // The native task is kept (by its retention): a retry gets its proof.
    let native_retry = record("alice", &native.task_id, Some("n3"), 2);
    assert!(matches!(
        store.begin_task(native_retry).await.unwrap(),
        Begin::Done { .. }
    ));
}
