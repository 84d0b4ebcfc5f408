//! docs/troubleshooting.md documents every message `sage` can print.
//!
//! The sources are read at test time (no binary runs, std only): every
//! `#[error("...")]` of `crates/*/src`, every `Failure::Usage(..)` and
//! `Failure::Failed(..)` text of the CLI, every `warn!`/`error!` log
//! message, and every `ProblemCode` wire name must appear in the document.
//!
//! A message is found in the document by its fixed text, as [`key`] cuts
//! it: from its first fixed part that holds a word (a message that starts
//! with a placeholder, `{addr} refused ...`, is found by `refused ...`), up
//! to six words, with each placeholder in between written `…`. So the
//! document's row for `#[error("cannot reach {addr}: {detail}. Is ...")]`
//! must show `cannot reach …: …. Is `sage serve` running`. A message with
//! no fixed word at all (`#[error("{0}")]`, `#[error(transparent)]`) is
//! skipped: its text comes from elsewhere.

use std::path::{Path, PathBuf};

/// The workspace root.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// The document, relative to the root.
const DOC: &str = "docs/troubleshooting.md";
/// Most words of a message's fixed text that the document must show.
const KEY_WORDS: usize = 6;
/// A fixed text shorter than this goes on past the next placeholder.
const MIN_WORDS: usize = 3;

/// One message found in the sources.
#[derive(Debug)]
struct Message {
    /// `crates/.../file.rs:LINE`.
    at: String,
    /// What made it a message (`#[error(`, `Failure::Usage(`, `warn!(`...).
    marker: &'static str,
    /// The format string, as written.
    text: String,
    /// What the document must contain.
    key: String,
}

/// A piece of a format string.
#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    Hole,
}

/// Checks that the scan found at least `min` messages of its `kind` (fewer
/// means the parser missed some), and that each has a row.
#[track_caller]
fn assert_found_and_documented(messages: &[Message], min: usize, kind: &str) {
    assert!(
        messages.len() >= min,
        "the scan found only {} {kind}: is the parser broken?",
        messages.len()
    );
    assert_documented(messages);
}

#[test]
fn every_error_type_message_is_documented() {
    let messages = scan(&["#[error("], |_| true);
    assert_found_and_documented(&messages, 50, "#[error] messages");
}

#[test]
fn every_cli_failure_is_documented() {
    let messages = scan(&["Failure::Usage(", "Failure::Failed("], |path| {
        path.starts_with("crates/sage-cli/")
    });
    assert_found_and_documented(&messages, 20, "CLI failures");
}

#[test]
fn every_logged_warning_and_error_is_documented() {
    let messages = scan(&["warn!(", "error!("], |_| true);
    assert_found_and_documented(&messages, 10, "warn!/error! messages");
}

#[test]
fn every_problem_code_is_documented() {
    let source = read("crates/sage-types/src/problem.rs");
    let as_str = source
        .split("fn as_str")
        .nth(1)
        .and_then(|rest| rest.split("fn http_status").next())
        .expect("ProblemCode::as_str in problem.rs");
    let codes: Vec<&str> = as_str
        .lines()
        .filter(|line| line.contains("ProblemCode::") && line.contains("=> \""))
        .filter_map(|line| line.split('"').nth(1))
        .collect();
    assert!(codes.len() >= 10, "found only {codes:?} in problem.rs");
    let doc = doc();
    let missing: Vec<&&str> = codes
        .iter()
        .filter(|code| !doc.contains(&format!("`{code}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "{DOC} has no row for the problem code(s) {missing:?} \
         (crates/sage-types/src/problem.rs): add each as `code` with its HTTP status, \
         the details the node sends with it (grep `ApiError::new(` in \
         crates/sage-service/src/node) and the fix"
    );
}

/// The key cutting itself, on the kinds of message the sources have.
#[test]
fn keys_are_cut_as_documented() {
    let k = |text: &str| key(&parts(text));
    assert_eq!(
        k("a key file holds 32 bytes (seed) or 64 bytes, not {size}").as_deref(),
        Some("a key file holds 32 bytes")
    );
    assert_eq!(
        k("peer {name} has two different keys: {a} from {b}").as_deref(),
        Some("peer … has two different keys:")
    );
    assert_eq!(
        k("{addr} refused the request: {} ({}): {}").as_deref(),
        Some("refused the request:")
    );
    assert_eq!(
        k("{addr} did not answer within {:.1} s; raise --timeout").as_deref(),
        Some("did not answer within")
    );
    assert_eq!(k("--input @{path}: {e}").as_deref(), Some("--input @…:"));
    assert_eq!(
        k("{{literal}} braces {x} then").as_deref(),
        Some("{literal} braces … then")
    );
    assert_eq!(k("{0}"), None);
    assert_eq!(k("{}{}{}: {message}"), None);
    assert_eq!(
        literal_in_call(
            &chars("(\n  \"header `{h}` \\\n   takes\\n\\\"it\\\"\",\n)"),
            0
        ),
        Some("header `{h}` takes\n\"it\"".to_owned())
    );
    assert_eq!(literal_in_call(&chars("(transparent)] x(\"no\")"), 0), None);
    assert_eq!(
        literal_in_call(&chars("(f(x, '(', '\\''), r#\"raw \"q\"\"#)"), 0),
        Some("raw \"q\"".to_owned())
    );
}

/// Fails listing every message of `messages` whose key is not in the doc.
fn assert_documented(messages: &[Message]) {
    let doc = doc();
    let missing: Vec<&Message> = messages.iter().filter(|m| !doc.contains(&m.key)).collect();
    if missing.is_empty() {
        return;
    }
    let mut report = format!(
        "{DOC} does not document {} message(s). Add a row for each, under the \
         section where a user meets it: | message (fixed text as printed, each \
         placeholder written …) | when | fix |. The row must contain the text \
         after `needs:`.\n",
        missing.len()
    );
    for m in missing {
        report.push_str(&format!(
            "\n  {}: {}{:?}\n      needs: {}\n",
            m.at, m.marker, m.text, m.key
        ));
    }
    panic!("{report}");
}

/// The document, whitespace collapsed, `\|` (a pipe in a table) as `|`.
fn doc() -> String {
    normalize(&read(DOC).replace("\\|", "|"))
}

fn read(relative: &str) -> String {
    let path = Path::new(ROOT).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The messages of every `crates/*/src/**/*.rs` (test code left out) that
/// `include` takes: the first string literal inside each call opened by
/// one of `markers`.
fn scan(markers: &[&'static str], include: impl Fn(&str) -> bool) -> Vec<Message> {
    let mut files = Vec::new();
    let crates = Path::new(ROOT).join("crates");
    for entry in std::fs::read_dir(&crates).expect("crates/") {
        let src = entry.expect("crates/ entry").path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    files.sort();
    let mut messages = Vec::new();
    for path in files {
        let relative = path
            .strip_prefix(ROOT)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if !include(&relative) {
            continue;
        }
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let code = chars(&without_tests_and_comments(&source));
        for &marker in markers {
            let pattern = chars(marker);
            let mut i = 0;
            while let Some(found) = find(&code, &pattern, i) {
                i = found + pattern.len();
                // `warn!(` but not `my_warn!(`; `error!(` but not `eprintln!(`.
                let glued = found > 0 && {
                    let before = code[found - 1];
                    before.is_alphanumeric() || before == '_'
                };
                if glued {
                    continue;
                }
                let Some(text) = literal_in_call(&code, i - 1) else {
                    continue;
                };
                let Some(key) = key(&parts(&text)) else {
                    continue;
                };
                let line = code[..found].iter().filter(|&&c| c == '\n').count() + 1;
                messages.push(Message {
                    at: format!("{relative}:{line}"),
                    marker,
                    text,
                    key,
                });
            }
        }
    }
    messages
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            // `#[cfg(test)] mod tests;` files.
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// `source` with comment lines blanked and everything from a
/// `#[cfg(test)] mod ...` on dropped; lines keep their numbers.
fn without_tests_and_comments(source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            let next = lines[i + 1..]
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.is_empty());
            if next.is_some_and(|l| l.starts_with("mod ") || l.starts_with("pub mod ")) {
                break;
            }
        }
        if !trimmed.starts_with("//") {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn chars(text: &str) -> Vec<char> {
    text.chars().collect()
}

fn find(haystack: &[char], needle: &[char], from: usize) -> Option<usize> {
    (from..=haystack.len().checked_sub(needle.len())?)
        .find(|&i| haystack[i..i + needle.len()] == *needle)
}

/// The first string literal inside the parenthesis that opens at `open`,
/// decoded; `None` when the call holds none.
fn literal_in_call(code: &[char], open: usize) -> Option<String> {
    let mut depth = 0usize;
    let mut i = open;
    while i < code.len() {
        match code[i] {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return None;
                }
            }
            '"' => return Some(string_literal(code, i + 1).0),
            'r' if !is_ident(code.get(i.wrapping_sub(1))) => {
                let hashes = code[i + 1..].iter().take_while(|&&c| c == '#').count();
                if code.get(i + 1 + hashes) == Some(&'"') {
                    return Some(raw_literal(code, i + 2 + hashes, hashes));
                }
            }
            '\'' => {
                // A char literal ('x', '\n'), else a lifetime.
                if code.get(i + 1) == Some(&'\\') {
                    let from = (i + 3).min(code.len());
                    i = from + code[from..].iter().position(|&c| c == '\'').unwrap_or(0);
                } else if code.get(i + 2) == Some(&'\'') {
                    i += 2;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// The string literal whose text starts at `start`, decoded, and the
/// index after its closing quote.
fn string_literal(code: &[char], start: usize) -> (String, usize) {
    let mut text = String::new();
    let mut i = start;
    while i < code.len() {
        match code[i] {
            '"' => return (text, i + 1),
            '\\' => {
                i += 1;
                match code.get(i) {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some('r') => text.push('\r'),
                    Some('0') => text.push('\0'),
                    Some('\n') => {
                        // A line continuation: the next line's indent goes too.
                        while code.get(i + 1).is_some_and(|c| c.is_whitespace()) {
                            i += 1;
                        }
                    }
                    Some('u') => {
                        let close = code[i..].iter().position(|&c| c == '}').unwrap_or(0);
                        let hex: String = code[i + 2..i + close].iter().collect();
                        if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            text.push(c);
                        }
                        i += close;
                    }
                    Some('x') => {
                        let hex: String = code[i + 1..(i + 3).min(code.len())].iter().collect();
                        if let Ok(b) = u8::from_str_radix(&hex, 16) {
                            text.push(char::from(b));
                        }
                        i += 2;
                    }
                    Some(&c) => text.push(c),
                    None => {}
                }
            }
            c => text.push(c),
        }
        i += 1;
    }
    (text, i)
}

/// A raw string literal (`r"..."`, `r#"..."#`) whose text starts at `start`.
fn raw_literal(code: &[char], start: usize, hashes: usize) -> String {
    let mut close = vec!['"'];
    close.extend(std::iter::repeat_n('#', hashes));
    let end = find(code, &close, start).unwrap_or(code.len());
    code[start..end].iter().collect()
}

/// A format string's fixed texts and placeholders (`{{` and `}}` are text).
fn parts(format: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Hole);
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    parts
}

/// Whether `token` (no whitespace) counts as a word: it holds a letter or digit.
fn is_word(token: &str) -> bool {
    token.chars().any(char::is_alphanumeric)
}

/// What the document must contain of a message: from its first fixed
/// text with a word, [`KEY_WORDS`] words at most, going past placeholders
/// (written `…`) while fewer than [`MIN_WORDS`]; `None` if no fixed text
/// has a word.
fn key(parts: &[Part]) -> Option<String> {
    let start = parts
        .iter()
        .position(|p| matches!(p, Part::Text(t) if t.split_whitespace().any(is_word)))?;
    let mut key = String::new();
    let mut words = 0;
    for part in &parts[start..] {
        match part {
            Part::Hole if words >= MIN_WORDS => break,
            Part::Hole => key.push('…'),
            Part::Text(text) => {
                let (taken, n) = take_words(text, KEY_WORDS - words);
                key.push_str(taken);
                words += n;
                if words >= KEY_WORDS {
                    break;
                }
            }
        }
    }
    let key = key.trim_end_matches(|c: char| c.is_whitespace() || c == '…');
    Some(normalize(key))
}

/// The longest prefix of `text` with at most `max` words, ending right
/// after its last word when it is cut; and its number of words.
fn take_words(text: &str, max: usize) -> (&str, usize) {
    let mut words = 0;
    let mut token_start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), token_start) {
            (false, None) => token_start = Some(i),
            (true, Some(start)) => {
                token_start = None;
                if is_word(&text[start..i]) {
                    words += 1;
                    if words == max {
                        return (&text[..i], words);
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(start) = token_start {
        if is_word(&text[start..]) {
            words += 1;
        }
    }
    (text, words)
}
