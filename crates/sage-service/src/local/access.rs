//! Who is calling: the kernel's word on the socket's other end
//! (`SO_PEERCRED`), and the allow-list it is checked against.

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use tokio::net::UnixListener;

use crate::config::file::LocalSection;

/// The process on the other end of a local connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Its user id; `u32::MAX` (no user) when the kernel did not say.
    pub uid: u32,
    /// Its primary group id; `u32::MAX` when the kernel did not say.
    pub gid: u32,
    /// Its process id, if the kernel said.
    pub pid: Option<i32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(cred) => Caller {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            },
            // Unknown is nobody: refused by every allow-list.
            Err(_) => Caller {
                uid: u32::MAX,
                gid: u32::MAX,
                pid: None,
            },
        }
    }
}

/// Who may call the local API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// These users.
    pub uids: Vec<u32>,
    /// Callers in one of these groups: their primary group
    /// (`SO_PEERCRED`) or a supplementary one (`/proc/PID/status`).
    pub groups: Vec<u32>,
}

impl Allow {
    /// `[local]`'s lists; without `allow_uids`, the node's own user only
    /// (root is not let in unless listed, or the node runs as root);
    /// without `allow_groups`, no group.
    pub fn from_config(local: &LocalSection) -> Allow {
        Allow {
            uids: local
                .allow_uids
                .clone()
                .unwrap_or_else(|| vec![nix::unistd::getuid().as_raw()]),
            groups: local.allow_groups.clone().unwrap_or_default(),
        }
    }

    /// Whether `caller` may call, by its user or primary group.
    pub fn permits(&self, caller: &Caller) -> bool {
        caller.uid != u32::MAX
            && (self.uids.contains(&caller.uid) || self.groups.contains(&caller.gid))
    }

    /// [`Allow::permits`], or one of the caller's supplementary groups is
    /// listed. Read while the connection is open, so the process is the
    /// one that connected (or a child that inherited the socket).
    fn permits_with_groups(&self, caller: &Caller) -> bool {
        if self.permits(caller) {
            return true;
        }
        let (false, Some(pid)) = (self.groups.is_empty() || caller.uid == u32::MAX, caller.pid)
        else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .is_some_and(|status| {
                supplementary_groups(&status).any(|gid| self.groups.contains(&gid))
            })
    }
}

/// The `Groups:` line of a `/proc/PID/status`.
fn supplementary_groups(status: &str) -> impl Iterator<Item = u32> + '_ {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .into_iter()
        .flat_map(|groups| groups.split_whitespace().filter_map(|g| g.parse().ok()))
}

/// Refuses a caller that the allow-list does not name, before any handler.
pub(super) async fn check(
    State(allow): State<Allow>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    request: Request,
    next: Next,
) -> Response {
    if allow.permits_with_groups(&caller) {
        return next.run(request).await;
    }
    tracing::warn!(
        uid = caller.uid,
        gid = caller.gid,
        pid = caller.pid,
        "local API: refused a caller that [local] allow_uids and allow_groups do not list"
    );
    super::problem(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "uid {} (gid {}) may not use this node's local API: list it in [local] allow_uids or allow_groups",
            caller.uid, caller.gid
        ),
        serde_json::Value::Null,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_is_let_in_by_its_user_or_its_primary_group() {
        let allow = Allow {
            uids: vec![1000],
            groups: vec![50],
        };
        let caller = |uid, gid| Caller {
            uid,
            gid,
            pid: None,
        };
        assert!(allow.permits(&caller(1000, 1)));
        assert!(allow.permits(&caller(7, 50)));
        assert!(!allow.permits(&caller(0, 0)), "root only if listed");
        assert!(!allow.permits(&caller(u32::MAX, 50)), "unknown is nobody");
    }

    #[test]
    fn supplementary_groups_are_read_from_the_status_file() {
        let status =
            "Name:\tapp\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 27 1000 \nVmPeak:\t1 kB\n";
        assert_eq!(
            supplementary_groups(status).collect::<Vec<_>>(),
            [4, 27, 1000]
        );
        assert_eq!(supplementary_groups("Name:\tx\n").count(), 0);
    }
}
