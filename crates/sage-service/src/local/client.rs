//! A client of the local API, for `sage delegate --via-node`: one
//! HTTP/1.1 request over the Unix socket, `Connection: close`, the answer
//! read to its end within a bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The most of an answer that is read.
const MAX_ANSWER_BYTES: u64 = 8 << 20;

/// Why the local API gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LocalClientError {
    /// The socket could not be reached.
    #[error("cannot reach the local API at {}: {source}; is `sage serve` running here with the local API enabled, and is this its socket (--socket)?", .path.display())]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No whole answer in time.
    #[error("the local API at {} did not answer within {} s", .path.display(), .after.as_secs_f64())]
    TimedOut {
        /// The socket.
        path: PathBuf,
        /// How long it was given.
        after: Duration,
    },
    /// The local API refused the request or the delegation failed.
    #[error("the local node: {detail}")]
    Problem {
        /// The HTTP status.
        status: u16,
        /// The problem's code: the delegation's, or the local API's own.
        code: String,
        /// What it says.
        detail: String,
    },
    /// The answer is not HTTP as expected.
    #[error("the local API's answer cannot be read: {0}")]
    BadAnswer(String),
}

impl LocalClientError {
    /// The problem that `body`, an answer of `status`, states.
    pub fn problem(body: &serde_json::Value, status: u16) -> LocalClientError {
        LocalClientError::Problem {
            status,
            code: body["code"].as_str().unwrap_or("failed").to_owned(),
            detail: body["detail"]
                .as_str()
                .map_or_else(|| format!("status {status}"), str::to_owned),
        }
    }
}

/// An answer: its status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, chunked encoding undone.
    pub body: Vec<u8>,
}

/// Sends `method path` with `body` (JSON) to the local API at `socket`.
///
/// # Errors
/// [`LocalClientError`].
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Answer, LocalClientError> {
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| LocalClientError::Unreachable {
                path: socket.to_owned(),
                source,
            })?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let broken = |e: std::io::Error| LocalClientError::BadAnswer(e.to_string());
        stream.write_all(head.as_bytes()).await.map_err(broken)?;
        stream.write_all(body).await.map_err(broken)?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .await
            .map_err(broken)?;
        parse(&answer)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| LocalClientError::TimedOut {
            path: socket.to_owned(),
            after: timeout,
        })?
}

/// Reads a whole HTTP/1.1 answer.
fn parse(answer: &[u8]) -> Result<Answer, LocalClientError> {
    let bad = |what: &str| LocalClientError::BadAnswer(what.to_owned());
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of the head"))?;
    let head = std::str::from_utf8(&answer[..end]).map_err(|_| bad("a head that is not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let chunked = lines.any(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("transfer-encoding:") && lower.contains("chunked")
    });
    let rest = &answer[end + 4..];
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("a broken chunked body"))?
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_whole_or_chunked() {
        let plain = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((plain.status, plain.body.as_slice()), (200, &b"{}"[..]));
        let chunked =
            parse(b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(
            (chunked.status, chunked.body.as_slice()),
            (403, &b"abcd"[..])
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
