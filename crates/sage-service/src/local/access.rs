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

/// Where a local request came from, for the log: the socket's caller,
/// or a holder of the loopback port's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A process on the socket, as the kernel names it.
    Socket(Caller),
    /// A client of the loopback port that presented the token.
    Token(std::net::SocketAddr),
}

impl std::fmt::Display for Origin {
    /// As the signed task's `origin` says it: `local uid=U gid=G pid=P`
    /// (no `pid` when the kernel gives none), or `local token ADDRESS`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Socket(c) => {
                write!(f, "local uid={} gid={}", c.uid, c.gid)?;
                match c.pid {
                    Some(pid) => write!(f, " pid={pid}"),
                    None => Ok(()),
                }
            }
            Origin::Token(addr) => write!(f, "local token {addr}"),
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
    mut request: Request,
    next: Next,
) -> Response {
    if allow.permits_with_groups(&caller) {
        request.extensions_mut().insert(Origin::Socket(caller));
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

/// The loopback port's secret, as read from its file.
#[derive(Clone)]
pub struct Token(std::sync::Arc<Vec<u8>>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(redacted)")
    }
}

impl Token {
    /// The token in `text` (surrounding whitespace dropped), if not empty.
    pub fn new(text: &str) -> Option<Token> {
        let text = text.trim();
        (!text.is_empty()).then(|| Token(std::sync::Arc::new(text.as_bytes().to_vec())))
    }

    /// Whether `presented` is the token, in time that does not depend on
    /// where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        let token = self.0.as_slice();
        presented.len() == token.len()
            && presented
                .iter()
                .zip(token)
                .fold(0u8, |differ, (a, b)| differ | (a ^ b))
                == 0
    }
}

/// Refuses a request to the loopback port without the bearer token.
pub(super) async fn check_token(
    State(token): State<Token>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if presented.is_some_and(|p| token.matches(p)) {
        request.extensions_mut().insert(Origin::Token(addr));
        return next.run(request).await;
    }
    tracing::warn!(client = %addr, "local API: refused a request to the loopback port without its bearer token");
    super::problem(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this port needs `Authorization: Bearer TOKEN`, the token of [local] token_file".into(),
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
    fn only_the_whole_token_matches() {
        let token = Token::new(" s3cret\n").unwrap();
        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3cre"));
        assert!(!token.matches(b"s3cret!"));
        assert!(!token.matches(b"S3cret"));
        assert!(Token::new(" \n").is_none());
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
