//! What `sage serve` would fail on in its configuration, found all at once
//! and placed at the config file's line and key: the file's own problems
//! ([`ConfigFile::load_all`]) and what it names: each `command`
//! executor's program, each `http` executor's URL and headers, the node's
//! key, the TLS certificate and key. `sage config check` and `serve` share
//! these checks, so that a file that passes the one starts the other.

use std::fmt;
use std::path::{Path, PathBuf};

use super::file::{ConfigError, ConfigFile, ConfigProblem, ExecutorKind, TlsFiles};
use super::position::Positions;
use crate::keydir::KeyDir;

/// Every problem found, in the file's order where it has one.
#[derive(Debug)]
pub struct Problems(pub Vec<ConfigError>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {
    // One problem's cause is the list's: advice for it can be found. With
    // several, each is looked at on its own (`Problems::0`).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.0.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

impl From<ConfigError> for Problems {
    fn from(error: ConfigError) -> Self {
        Problems(vec![error])
    }
}

impl Problems {
    /// `Ok` when there are none.
    ///
    /// # Errors
    /// Itself, when it holds a problem.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// Who the node is, for the checks of what the file names beyond itself.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// Its platform name, when known.
    pub name: Option<&'a str>,
    /// Its key directory.
    pub keys: &'a KeyDir,
    /// Its TLS files, if it serves HTTPS.
    pub tls: Option<&'a TlsFiles>,
    /// Whether its key is read from the key directory (not, under
    /// systemd, from a credential).
    pub key_in_dir: bool,
}

/// Reads `path` and checks it whole, as `sage config check` does: every
/// problem of its text, then what it names (see the module's text). The
/// node is the file's: its `[node]` name (else the only key of its key
/// directory), key directory (`keys_dir` wins over the file's, as
/// `serve --keys-dir` does) and TLS files; its limits are checked too.
///
/// # Errors
/// [`Problems`], all of them.
pub fn check_file(path: &Path, keys_dir: Option<&Path>) -> Result<ConfigFile, Problems> {
    let (file, mut problems) = ConfigFile::load_all(path);
    let Some(file) = file else {
        return Err(Problems(problems));
    };
    let whole = |problem| ConfigError {
        path: path.to_owned(),
        line: None,
        key: None,
        problem: Box::new(problem),
    };
    if let Err(e) = file.limits().check() {
        problems.push(whole(ConfigProblem::Limits(e)));
    }
    let node = &file.node;
    if node.tls_cert.is_some() != node.tls_key.is_some() {
        problems.push(whole(ConfigProblem::TlsPair));
    }
    let keys = KeyDir::new(
        keys_dir
            .map(Path::to_owned)
            .or_else(|| node.keys_dir.clone())
            .unwrap_or_else(|| "keys".into()),
    );
    let only_key = || {
        let found = keys.key_files().ok()?;
        (found.len() == 1).then(|| found[0].0.clone())
    };
    let name = node.name.clone().or_else(only_key);
    let tls = match (&node.tls_cert, &node.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let named = Node {
        name: name.as_deref(),
        keys: &keys,
        tls: tls.as_ref(),
        key_in_dir: true,
    };
    problems.extend(named_problems(path, &file, named).0);
    Problems(problems).into_result().map(|()| file)
}

/// The problems of what `file` (read from `path`) names beyond itself: the
/// executors' programs, URLs and headers, the node's key and TLS files.
pub fn named_problems(path: &Path, file: &ConfigFile, node: Node<'_>) -> Problems {
    // Only for the lines: a file that cannot be read again has none.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let positions = Positions::new(&text);
    let at = |table: &[&str], key: &str, full_key: String, problem: ConfigProblem| ConfigError {
        path: path.to_owned(),
        line: positions.line_of_key(table, key),
        key: Some(full_key),
        problem: Box::new(problem),
    };
    let mut problems = Vec::new();
    for (task_type, section) in &file.executors {
        let table = ["executors", task_type.as_str()];
        if section.kind == ExecutorKind::Command {
            if let Some(problem) = section.command.as_ref().and_then(|command| {
                program_problem(&command.0[0], section.working_dir.as_deref(), &section.env)
            }) {
                let full = format!("executors.{task_type}.command");
                problems.push(at(&table, "command", full, problem));
            }
        }
        if let Err(e) = section.build(task_type, node.name.unwrap_or("node"), None, None) {
            let key = match e {
                sage_exec::http::HttpConfigError::BadUrl { .. } => "url",
                _ => "headers",
            };
            let full = format!("executors.{task_type}.{key}");
            problems.push(at(&table, key, full, e.into()));
        }
    }
    if let (Some(name), true) = (node.name, node.key_in_dir) {
        if let Err(e) = node.keys.load_identity(name) {
            let problem = ConfigProblem::NodeKey(e);
            problems.push(at(&["node"], "name", "node.name".into(), problem));
        }
    }
    if let Some(tls) = node.tls {
        if let Err(e) = crate::tls::ServerTls::load(&tls.cert, &tls.key) {
            let full = "node.tls_cert".to_owned();
            problems.push(at(&["node"], "tls_cert", full, e.into()));
        }
    }
    Problems(problems)
}

/// Why `program` cannot be started as a `command` executor would start it:
/// a path (it holds a `/`) is taken as it is, relative to `working_dir`
/// when there is one; a bare name is looked up on the `PATH` the program
/// gets (its `env`'s, else the node's own).
fn program_problem(
    program: &str,
    working_dir: Option<&Path>,
    env: &std::collections::BTreeMap<String, String>,
) -> Option<ConfigProblem> {
    if program.contains('/') {
        let path = match working_dir {
            Some(dir) if Path::new(program).is_relative() => dir.join(program),
            _ => PathBuf::from(program),
        };
        return match std::fs::metadata(&path) {
            Err(_) => Some(ConfigProblem::NoProgram(path)),
            Ok(meta) if !is_executable(&meta) => Some(ConfigProblem::NotExecutable(path)),
            Ok(_) => None,
        };
    }
    let search = env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    let found = std::env::split_paths(&search)
        .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|meta| is_executable(&meta)));
    (!found).then(|| ConfigProblem::NotOnPath {
        program: program.to_owned(),
        path: search,
    })
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}
