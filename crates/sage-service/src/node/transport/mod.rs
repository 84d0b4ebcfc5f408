//! The server's transport: our own accept loop over hyper's HTTP/1.1
//! connections (keep-alive on), serving the axum [`Router`], so that the
//! socket-level [`Limits`](crate::config::Limits) hold, with or without TLS:
//!
//! - `max_connections_per_address`: a connection from an address that
//!   already holds this many is closed as soon as it is accepted, so one
//!   address cannot take every slot ([`registry`] counts them).
//! - `max_connections`: a semaphore of slots, one per open connection. A
//!   newcomer at the limit makes room: the idlest connection (the longest
//!   without a request in progress; never one with a request in progress)
//!   is closed and the newcomer takes its slot at once. When every
//!   connection has a request in progress the newcomer waits for one to
//!   close (the kernel's backlog holds those behind it).
//! - `max_header_bytes`: hyper's own bounds on the head and on its read
//!   buffer, so an unfinished head holds at most that much memory; a head
//!   over it is answered 431 `too_large` (a problem) and its connection
//!   closed ([`connection`]).
//! - `header_read_timeout`: from the first byte of a request to its last
//!   header, and for TLS from the accept to the end of the handshake
//!   ([`connection`]). A slowloris client is disconnected.
//! - `body_read_timeout`: from the end of the headers to the end of the
//!   body ([`body`]); the handler sees a read error and answers 400
//!   `malformed` naming the limit, and the connection is closed.
//! - `idle_timeout`: a kept-alive connection with nothing in flight and no
//!   bytes either way for this long is closed.
//! - `TCP_NODELAY` on every accepted socket.
//! - Accept errors (`EMFILE`, ...) are logged and retried after a pause;
//!   they never end the server.
//! - Shutdown: stop accepting, let every connection finish its request in
//!   flight (idle ones close at once), and wait for all of them up to the
//!   drain deadline; past it, the remaining connections are dropped.
//!
//! Connections closed to hold these limits are counted in
//! `sage_connections_closed_total{reason}`.
//!
//! The timeouts, `max_header_bytes` and `max_connections_per_address` are
//! read from the node's limits at each accept, so a reload applies to new
//! connections; `max_connections` is fixed at start.
//!
//! hyper's own `header_read_timeout` is not used: hyper 1 starts its timer
//! as soon as it waits for a request head, so it would also close every
//! kept-alive connection that is merely idle.

mod activity;
mod body;
mod connection;
mod registry;

pub(super) use connection::ClientAddr;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use self::connection::Shared;
use self::registry::Registry;
use super::metrics::CloseReason;
use super::{AppState, Shutdown};
use crate::tls::ServerTls;

/// How long the loop pauses after an accept error that is not about one
/// connection (out of descriptors, of memory), so as not to spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How long a newcomer at `max_connections` waits for the slot of the
/// connection closed for it before another one is picked. An idle
/// connection gives its slot back at once; one that began a request since
/// it was picked finishes it first.
const EVICTION_WAIT: Duration = Duration::from_millis(500);

/// How often a newcomer at `max_connections` looks again for a connection
/// to close, while every one has a request in progress (one may end
/// without its connection closing).
const BUSY_RECHECK: Duration = Duration::from_millis(100);

/// Where the server is in its life; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving requests.
    Serving,
    /// Shutting down: finish the request in flight, then close.
    Draining,
    /// The drain deadline passed: close now.
    Stopped,
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until
/// `signal`, then drains; see the module documentation.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    state: AppState,
    tls: Option<ServerTls>,
    signal: impl Future<Output = ()>,
) -> io::Result<Shutdown> {
    let limits = state.limits();
    let shared = Arc::new(Shared::new(app, state.clone(), tls.as_ref()));
    let registry = Arc::new(Registry::default());
    // At least one connection; `acquire_many` counts in u32.
    let capacity = limits
        .max_connections
        .clamp(1, u32::MAX as usize)
        .min(Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(capacity));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let mut signal = std::pin::pin!(signal);
    let mut accept_failing = false;
    loop {
        let accepted = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if accept_failing {
                    tracing::info!("accepting connections again");
                    accept_failing = false;
                }
                // The limits now: a reload applies to new connections.
                let limits = state.limits();
                // Only this loop registers connections, so the count cannot
                // grow between this check and the registration below.
                let per_address = limits.connections_per_address();
                if registry.open_from(peer.ip()) >= per_address {
                    tracing::debug!(%peer, per_address, "closing a new connection: its address holds max_connections_per_address already");
                    shared.closed(CloseReason::PerAddressCap);
                    continue;
                }
                let permit = match slots.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => match make_room(&slots, &registry, &mut signal).await {
                        Some(permit) => permit,
                        None => break,
                    },
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
                }
                let registered = registry.register(peer.ip());
                tokio::spawn(connection::run(
                    stream,
                    peer,
                    shared.clone(),
                    connection::PerConnection::new(&limits),
                    phase_rx.clone(),
                    permit,
                    registered,
                ));
            }
            // The client gave up between its connect and our accept.
            Err(e) if is_about_one_connection(&e) => {
                tracing::debug!("accept: {e}");
            }
            Err(e) => {
                if accept_failing {
                    tracing::debug!("accept failed again: {e}");
                } else {
                    tracing::warn!(
                        "cannot accept connections: {e}; retrying every {} ms (out of file descriptors? raise `ulimit -n` / LimitNOFILE=, or lower limits.max_connections)",
                        ACCEPT_RETRY.as_millis()
                    );
                    accept_failing = true;
                }
                tokio::select! {
                    () = &mut signal => break,
                    () = tokio::time::sleep(ACCEPT_RETRY) => {}
                }
            }
        }
    }
    // No new connections from here on.
    drop(listener);
    let drain = state.limits().drain_timeout;
    tracing::info!(
        in_flight = state.in_flight(),
        drain_secs = drain.as_secs_f64(),
        "shutting down: no new tasks, draining in-flight ones"
    );
    phase_tx.send_replace(Phase::Draining);
    // Every connection holds a slot until it closes: all slots free means
    // all connections closed.
    let all = u32::try_from(capacity).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(drain, slots.acquire_many(all)).await;
    match drained {
        Ok(_) => Ok(Shutdown::Drained),
        Err(_) => {
            let abandoned = state.in_flight();
            phase_tx.send_replace(Phase::Stopped);
            Ok(Shutdown::DeadlinePassed { abandoned })
        }
    }
}

/// A slot for a newcomer at `max_connections`: the idlest connection is
/// asked to close and its slot taken; while every connection has a request
/// in progress, the first slot given back. `None` if `signal` comes first.
async fn make_room<S: Future<Output = ()>>(
    slots: &Arc<Semaphore>,
    registry: &Registry,
    signal: &mut std::pin::Pin<&mut S>,
) -> Option<OwnedSemaphorePermit> {
    loop {
        let wait = match registry.evict_idlest() {
            Some(evicted) => {
                tracing::debug!(
                    address = %evicted.address,
                    quiet_secs = evicted.quiet_for.as_secs_f64(),
                    open = registry.len(),
                    "at max_connections: closing the idlest connection for a new one"
                );
                EVICTION_WAIT
            }
            None => BUSY_RECHECK,
        };
        tokio::select! {
            () = signal.as_mut() => return None,
            permit = tokio::time::timeout(wait, slots.clone().acquire_owned()) => {
                if let Ok(Ok(permit)) = permit {
                    return Some(permit);
                }
            }
        }
    }
}

/// Accept errors that concern one connection only: skip it and go on.
fn is_about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}
