//! The checks both protocols make of a request before its task is
//! recorded: the bounded body (read by the [`TaskBody`] extractor, which
//! owns its refusal), the signer's rate budget, the executor and its
//! queue, cost and expiry, and what a store failure tells the caller.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use sage_crypto::Peer;
use sage_exec::Entry;
use sage_store::StoreError;
use sage_types::untrusted::Untrusted;
use sage_types::ProblemCode;

use super::rate::default_burst;
use super::state::{Inner, Policy};
use super::{ApiError, AppState};
use crate::config::Limits;

/// A task request's body, read up to the `max_body_bytes` of the policy
/// snapshot the request keeps for all its checks, or an executor's larger
/// one ([`check_body`] holds each type to its own once the task is read).
pub(super) struct TaskBody {
    /// The policy this request is judged by (a reload does not change it).
    pub policy: Arc<Policy>,
    /// The whole body.
    pub bytes: Bytes,
}

impl FromRequest<AppState> for TaskBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let policy = state.policy();
        let limit = policy
            .executors
            .max_body_bytes()
            .map_or(policy.limits.max_body_bytes, |most| {
                most.max(policy.limits.max_body_bytes)
            });
        let bytes = read_body(req.into_body(), limit).await?;
        Ok(Self { policy, bytes })
    }
}

/// Reads at most `limit` bytes of body.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            ProblemCode::TooLarge,
            format!("request body exceeds this node's limit of {limit} bytes"),
        )),
        Err(e) => Err(ApiError::new(
            ProblemCode::Malformed,
            format!("cannot read request body: {e}"),
        )),
    }
}

/// Refuses a body larger than its task type's limit: the executor's
/// `max_body_bytes`, else the node's.
pub(super) fn check_body(
    entry: &Entry,
    limits: &Limits,
    task_type: &str,
    len: usize,
) -> Result<(), ApiError> {
    let limit = entry.max_body_bytes.unwrap_or(limits.max_body_bytes);
    if len > limit {
        return Err(ApiError::new(
            ProblemCode::TooLarge,
            format!(
                "a task of type \"{}\" may be at most {limit} bytes on this node; this one is {len}",
                Untrusted(task_type)
            ),
        ));
    }
    Ok(())
}

/// Takes one task from the signer's rate budget, if the node has one:
/// refused `rate_limited` (429) with `Retry-After` when it is spent.
pub(super) fn check_rate(inner: &Inner, limits: &Limits, signer: &Peer) -> Result<(), ApiError> {
    let Some(rate) = limits.peer_rate else {
        return Ok(());
    };
    let burst = limits.peer_burst.unwrap_or_else(|| default_burst(rate));
    inner
        .peer_rate
        .take(signer.key_id.as_str(), rate, burst, Instant::now())
        .map_err(|wait| {
            ApiError::new(
                ProblemCode::RateLimited,
                format!(
                    "{} sent more than this node's limit of {rate} tasks per second (burst {burst}); retry in {:.1} s",
                    signer.name,
                    wait.as_secs_f64()
                ),
            )
            .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
}

/// Gives back the token [`check_rate`] took, for a request refused as a
/// replay or conflict.
pub(super) fn refund_rate(inner: &Inner, limits: &Limits, signer: &Peer) {
    if let Some(rate) = limits.peer_rate {
        let burst = limits.peer_burst.unwrap_or_else(|| default_burst(rate));
        inner.peer_rate.refund(signer.key_id.as_str(), burst);
    }
}

/// The refusal of an executor whose runs and queue are full.
pub(super) fn busy(task_type: &str) -> ApiError {
    ApiError::new(
        ProblemCode::Busy,
        format!("the {task_type} executor is at its concurrency limit and its queue is full; retry shortly"),
    )
    .retry_after(1)
}

/// Refuses a task whose estimate is above its own `max_cost` or the
/// executor's ceiling, or whose `max_cost` is below the executor's base price.
pub(super) fn check_cost(
    entry: &Entry,
    estimate: f64,
    max_cost: Option<f64>,
) -> Result<(), ApiError> {
    let over = |detail: String| Err(ApiError::new(ProblemCode::OverBudget, detail));
    if let Some(max) = max_cost {
        if estimate > max {
            return over(format!(
                "the task's estimate of {estimate} ATP exceeds its own max_cost of {max} ATP"
            ));
        }
        if let Some(model) = &entry.cost {
            if model.base > max {
                return over(format!(
                    "this executor charges at least {} ATP, above the task's max_cost of {max} ATP",
                    model.base
                ));
            }
        }
    }
    if let Some(ceiling) = entry.max_cost {
        if estimate > ceiling {
            return over(format!("the task's estimate of {estimate} ATP exceeds this executor's ceiling of {ceiling} ATP"));
        }
    }
    Ok(())
}

/// Refuses a task whose expiry (unix ms) passed more than the skew ago.
pub(super) fn check_not_expired(
    limits: &Limits,
    expires_at: u64,
    now: u64,
) -> Result<(), ApiError> {
    if expires_at.saturating_add(limits.clock_skew.as_millis() as u64) < now {
        return Err(ApiError::new(
            ProblemCode::Expired,
            format!(
                "task expired {:.1} s ago (allowed skew {} s)",
                (now - expires_at) as f64 / 1000.0,
                limits.clock_skew.as_secs()
            ),
        ));
    }
    Ok(())
}

/// The executor of `task_type`, or the refusal naming what this node serves.
pub(super) fn executor_for<'a>(policy: &'a Policy, task_type: &str) -> Result<&'a Entry, ApiError> {
    policy.executors.get(task_type).ok_or_else(|| {
        let served: Vec<&str> = policy
            .executors
            .describe()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        ApiError::new(
            ProblemCode::UnsupportedTask,
            format!(
                "no executor for task type \"{}\"; this node serves: {}",
                Untrusted(task_type),
                served.join(", ")
            ),
        )
    })
}

/// A store failure: the node cannot promise anything about the task.
pub(super) fn store_error(e: StoreError) -> ApiError {
    ApiError::new(
        ProblemCode::Internal,
        format!("node state: {}", for_operator(&e)),
    )
}

/// A store failure as the node logs it: a stopped database thread gets the
/// operator's fix, which the store's own message leaves to its caller.
pub(super) fn for_operator(e: &StoreError) -> String {
    match e {
        StoreError::Closed { .. } => format!("{e}; restart sage (the log has the cause)"),
        _ => e.to_string(),
    }
}
