//! `--json`: every command that reports prints exactly one JSON object on
//! stdout, a failure included (docs/cli-json.md). Commands hand their report
//! to [`report`]; `main` prints it, or the failure, once the command ends,
//! so that a report and a failure never make two objects.

use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

use sage_service::delegator::recorded::AttemptError;
use sage_service::delegator::route::RouteError;

use crate::failure::{print_json, Failure};

/// The version of every object's shape; `schema` is `sage.COMMAND/1`.
const VERSION: u32 = 1;

/// The run's command path (`proofs show`), set once `--json` is known.
static COMMAND: OnceLock<String> = OnceLock::new();
/// The command's report, printed by [`finish`].
static REPORT: Mutex<Option<Value>> = Mutex::new(None);

/// Turns JSON output on for `command` (its path, `proofs show`). The mode
/// is process-wide, as stdout is, so that no command's arguments carry it.
pub fn enable(command: &str) {
    let _ = COMMAND.set(command.to_owned());
}

/// Whether the run prints JSON.
pub fn enabled() -> bool {
    COMMAND.get().is_some()
}

/// The `schema` of `command`'s objects: `sage.proofs.show/1`.
fn schema(command: &str) -> String {
    format!("sage.{}/{VERSION}", command.replace(' ', "."))
}

/// Keeps `fields` (an object) as the command's report; [`finish`] prints it
/// with its `schema`.
pub fn report(mut fields: Value) {
    let command = COMMAND.get().map(String::as_str).unwrap_or("");
    fields["schema"] = Value::String(schema(command));
    *REPORT.lock().unwrap_or_else(|e| e.into_inner()) = Some(fields);
}

/// [`report`] under another schema than the command's: a variant of the
/// command whose object has another shape (`delegate via-node`).
pub fn report_as(variant: &str, mut fields: Value) {
    fields["schema"] = Value::String(schema(variant));
    *REPORT.lock().unwrap_or_else(|e| e.into_inner()) = Some(fields);
}

/// Prints the run's one object: the report, with the failure's `error`
/// when the command reported and then failed (a proof short of its terms,
/// receipts that do not verify), else the failure alone.
pub fn finish(failure: Option<&Failure>) {
    let Some(command) = COMMAND.get() else {
        return;
    };
    let report = REPORT.lock().unwrap_or_else(|e| e.into_inner()).take();
    let object = match (report, failure) {
        (Some(report), None) => report,
        (Some(mut report), Some(failure)) => {
            report["error"] = error_json(failure);
            report
        }
        (None, Some(failure)) => json!({
            "schema": schema("error"),
            "command": command,
            "error": error_json(failure),
        }),
        (None, None) => return,
    };
    print_json(&object);
}

/// `{code, message}`: the message is what stderr says.
fn error_json(failure: &Failure) -> Value {
    json!({ "code": code(failure), "message": failure.to_string() })
}

/// A failure's stable snake_case code: the typed error's kind where there
/// is one (a node's refusal carries the node's own problem code), else
/// `usage` or `failed`.
pub fn code(failure: &Failure) -> String {
    match failure {
        Failure::Usage(_) => "usage".into(),
        Failure::Failed(_) => "failed".into(),
        Failure::Error { error, .. } => error_code(error.as_ref()),
    }
}

fn error_code(error: &(dyn std::error::Error + 'static)) -> String {
    use sage_service::{ClientError, DelegateError, KeyDirError};
    if let Some(e) = error.downcast_ref::<DelegateError>() {
        return e.code().into();
    }
    if let Some(e) = error.downcast_ref::<sage_service::local::client::LocalClientError>() {
        return match e {
            sage_service::local::client::LocalClientError::Unreachable { .. } => "unreachable",
            sage_service::local::client::LocalClientError::TimedOut { .. } => "timed_out",
            sage_service::local::client::LocalClientError::Problem { code, .. } => code,
            _ => "bad_response",
        }
        .into();
    }
    if let Some(e) = error.downcast_ref::<ClientError>() {
        return e.code().into();
    }
    if let Some(e) = error.downcast_ref::<AttemptError>() {
        return e.code().into();
    }
    if let Some(e) = error.downcast_ref::<RouteError>() {
        return e.code().into();
    }
    if let Some(e) = error.downcast_ref::<KeyDirError>() {
        return match e {
            KeyDirError::NotFound { .. } => "key_not_found",
            KeyDirError::Exists { .. } => "key_exists",
            KeyDirError::PeerExists { .. } => "peer_exists",
            KeyDirError::NoSuchPeer { .. } => "unknown_peer",
            KeyDirError::InvalidName { .. } | KeyDirError::LctId(_) => "invalid_name",
            _ => "key_dir",
        }
        .into();
    }
    let kind = if error.is::<sage_service::config::file::ConfigError>()
        || error.is::<sage_service::config::ResolveError>()
    {
        "config"
    } else if error.is::<sage_store::StoreError>() {
        "store"
    } else if error.is::<sage_service::delegator::ledger::ReceiptError>() {
        "receipt"
    } else if error.is::<sage_service::TlsError>() {
        "tls_files"
    } else if error.is::<std::io::Error>() {
        "io"
    } else {
        "failed"
    };
    kind.into()
}

/// Milliseconds to three decimals (a microsecond), so that a duration
/// prints as `0.616`, not `0.6155820000000001`.
pub fn ms3(ms: f64) -> Value {
    let rounded = (ms * 1000.0).round() / 1000.0;
    serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number)
}

/// A [`std::time::Duration`] as [`ms3`] milliseconds.
pub fn duration_ms(d: std::time::Duration) -> Value {
    ms3(d.as_secs_f64() * 1000.0)
}

/// A time as the pair every object uses: `NAME` (RFC 3339, UTC, to the
/// millisecond) and `NAME_ms` (unix milliseconds), inserted into `object`.
pub fn insert_time(object: &mut Value, name: &str, ms: Option<u64>) {
    object[name] = ms.map_or(Value::Null, |ms| Value::String(crate::time::utc(ms)));
    object[format!("{name}_ms")] = ms.map_or(Value::Null, Value::from);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_to_the_microsecond() {
        assert_eq!(ms3(0.6155820000000001).to_string(), "0.616");
        assert_eq!(ms3(12.0).to_string(), "12.0");
        assert_eq!(
            duration_ms(std::time::Duration::from_micros(1500)).to_string(),
            "1.5"
        );
        assert_eq!(ms3(f64::NAN), Value::Null);
    }

    #[test]
    fn codes_come_from_the_typed_error() {
        assert_eq!(code(&Failure::Usage("x".into())), "usage");
        assert_eq!(code(&Failure::Failed("x".into())), "failed");
        let refused: Failure = sage_service::ClientError::TimedOut {
            addr: "a".into(),
            after: std::time::Duration::from_secs(1),
        }
        .into();
        assert_eq!(code(&refused), "timed_out");
        let wrapped: Failure =
            sage_service::DelegateError::Client(sage_service::ClientError::Unhealthy {
                addr: "a".into(),
                status: "starting".into(),
            })
            .into();
        assert_eq!(code(&wrapped), "unhealthy");
    }

    #[test]
    fn times_are_a_pair() {
        let mut object = json!({});
        insert_time(&mut object, "sent_at", Some(1_796_407_200_250));
        assert_eq!(
            object,
            json!({"sent_at": "2026-12-04T18:00:00.250Z", "sent_at_ms": 1_796_407_200_250_u64})
        );
        insert_time(&mut object, "sent_at", None);
        assert_eq!(object, json!({"sent_at": null, "sent_at_ms": null}));
    }
}
