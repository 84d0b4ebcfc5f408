//! JSON as Python's `json` module reads it, for the legacy protocol.
//!
//! The Python nodes sign `json.dumps(obj, sort_keys=True)` of the object
//! `json.loads` made of what they received, so a legacy message means the
//! *Python values* of its text, and a node that checks or runs it must read
//! it as Python does. serde_json cannot: it refuses what Python writes for
//! non-finite floats (`NaN`, `Infinity`, `-Infinity`) and lone surrogates
//! (`"\ud800"`), stops at 128 levels of nesting, and a number round-tripped
//! through [`serde_json::from_value`] can change type (`10**40` becomes the
//! float `1e40`). [`loads`] reads the text into a [`PyValue`] that holds
//! exactly the values Python would, [`PyValue::canonical`] writes what
//! `json.dumps(value, sort_keys=True)` prints, and [`PyValue::to_json`] is
//! the view given to executors: every number spelled as Python prints it.
//!
//! Rules, all Python's (CPython 3.11, `strict=True`):
//!
//! - the text is UTF-8 (a leading BOM is dropped; surrogate code points
//!   encoded in it are kept, as `surrogatepass` does); whitespace is
//!   space, tab, CR and LF;
//! - a number with neither fraction nor exponent is an `int` of any size,
//!   up to 4,300 digits (Python's conversion limit); any other is a `float`,
//!   correctly rounded, `1e400` being infinity; `NaN`, `Infinity` and
//!   `-Infinity` are floats;
//! - strings refuse raw control characters below U+0020; a `\uXXXX` high
//!   surrogate followed by a `\uXXXX` low one is one character, any other
//!   surrogate stays alone;
//! - a repeated object key keeps its last value;
//! - nesting goes to [`MAX_DEPTH`] levels (Python's own limit is its
//!   recursion limit, about 1,000); deeper text is refused, never
//!   recursed into: the parser keeps its own stack.

use std::str::FromStr as _;

use serde_json::{Map, Number, Value};

use crate::canonical::{decode_code_point, write_python_float, write_str_bytes};

/// The deepest nesting of lists and dicts that [`loads`] reads.
pub const MAX_DEPTH: usize = 1000;

/// The most digits an integer may have (Python's `sys.int_info.default_max_str_digits`).
pub const MAX_INT_DIGITS: usize = 4300;

/// A value as Python's `json.loads` builds it.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    Null,
    /// `True` or `False`.
    Bool(bool),
    /// An `int`: its decimal digits, `-` first if negative, no leading zero.
    Int(String),
    /// A `float`, non-finite ones included.
    Float(f64),
    /// A `str`.
    Str(PyStr),
    /// A `list`.
    List(Vec<PyValue>),
    /// A `dict`: keys unique and sorted as Python sorts `str` (by code point).
    Dict(Vec<(PyStr, PyValue)>),
}

/// A Python `str`: UTF-8 that may also hold lone surrogates (each encoded
/// on three bytes, as Python's `surrogatepass` does). Byte order is code
/// point order, as for UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PyStr(Vec<u8>);

impl PyStr {
    /// The string, if it holds no lone surrogate.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The string with each lone surrogate replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> String {
        if let Some(s) = self.as_str() {
            return s.to_owned();
        }
        let mut out = String::with_capacity(self.0.len());
        let mut rest = self.0.as_slice();
        while !rest.is_empty() {
            let (cp, len) = decode_code_point(rest);
            out.push(char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER));
            rest = rest.get(len..).unwrap_or_default();
        }
        out
    }
}

impl From<&str> for PyStr {
    fn from(s: &str) -> Self {
        PyStr(s.as_bytes().to_vec())
    }
}

/// Why a text is not JSON as Python reads it, and the byte offset where
/// that was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PyJsonError {
    /// The text does not follow the grammar; `expected` says what was.
    #[error("{expected} at byte {at}")]
    Syntax {
        /// What the parser expected, in Python's words (`Expecting value`).
        expected: &'static str,
        /// Byte offset.
        at: usize,
    },
    /// The text is not UTF-8.
    #[error("invalid UTF-8 at byte {at}")]
    Utf8 {
        /// Byte offset.
        at: usize,
    },
    /// Lists and dicts nest deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} levels at byte {at}")]
    TooDeep {
        /// Byte offset.
        at: usize,
    },
    /// An integer has more than [`MAX_INT_DIGITS`] digits.
    #[error("an integer of more than {MAX_INT_DIGITS} digits at byte {at}")]
    IntTooLong {
        /// Byte offset.
        at: usize,
    },
}

/// Reads `text` as Python's `json.loads(text)` does (see the module's
/// rules).
///
/// ```
/// use sage_types::pyjson::loads;
/// let v = loads(br#"{"n": 10000000000000000000000000000000000000000, "x": NaN, "s": "\ud800"}"#).unwrap();
/// assert_eq!(
///     v.canonical(),
///     r#"{"n": 10000000000000000000000000000000000000000, "s": "\ud800", "x": NaN}"#
/// );
/// ```
///
/// # Errors
/// [`PyJsonError`] where Python raises, and for nesting beyond
/// [`MAX_DEPTH`].
pub fn loads(text: &[u8]) -> Result<PyValue, PyJsonError> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    check_utf8(text)?;
    Parser { text, pos: 0 }.document()
}

/// Checks that `text` is UTF-8, encoded surrogates allowed.
fn check_utf8(text: &[u8]) -> Result<(), PyJsonError> {
    let mut from = 0;
    loop {
        let rest = text.get(from..).unwrap_or_default();
        match std::str::from_utf8(rest) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let at = from + e.valid_up_to();
                match text.get(at..at + 3) {
                    Some([0xED, 0xA0..=0xBF, 0x80..=0xBF]) => from = at + 3,
                    _ => return Err(PyJsonError::Utf8 { at }),
                }
            }
        }
    }
}

/// A list or dict being read.
enum Open {
    List(Vec<PyValue>),
    /// The entries so far and the key whose value comes next.
    Dict(Vec<(PyStr, PyValue)>, PyStr),
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn syntax(&self, expected: &'static str) -> PyJsonError {
        PyJsonError::Syntax {
            expected,
            at: self.pos,
        }
    }

    fn eat(&mut self, literal: &[u8]) -> bool {
        let found = self
            .text
            .get(self.pos..)
            .unwrap_or_default()
            .starts_with(literal);
        if found {
            self.pos += literal.len();
        }
        found
    }

    /// The whole text: one value between optional whitespace.
    fn document(mut self) -> Result<PyValue, PyJsonError> {
        let mut open: Vec<Open> = Vec::new();
        'value: loop {
            self.skip_whitespace();
            let mut value = match self.peek() {
                Some(b'[') | Some(b'{') if open.len() == MAX_DEPTH => {
                    return Err(PyJsonError::TooDeep { at: self.pos });
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.skip_whitespace();
                    if !self.eat(b"]") {
                        open.push(Open::List(Vec::new()));
                        continue 'value;
                    }
                    PyValue::List(Vec::new())
                }
                Some(b'{') => {
                    self.pos += 1;
                    self.skip_whitespace();
                    if !self.eat(b"}") {
                        let key = self.key()?;
                        open.push(Open::Dict(Vec::new(), key));
                        continue 'value;
                    }
                    PyValue::Dict(Vec::new())
                }
                Some(b'"') => PyValue::Str(self.string()?),
                _ => self.scalar()?,
            };
            // Hand the finished value to the list or dict it is in, closing
            // those that end after it.
            loop {
                self.skip_whitespace();
                match open.last_mut() {
                    None => {
                        if self.pos != self.text.len() {
                            return Err(self.syntax("Extra data"));
                        }
                        return Ok(value);
                    }
                    Some(Open::List(items)) => {
                        items.push(value);
                        if self.eat(b",") {
                            continue 'value;
                        }
                        if !self.eat(b"]") {
                            return Err(self.syntax("Expecting ',' delimiter"));
                        }
                        let Some(Open::List(items)) = open.pop() else {
                            unreachable!("the last open value is this list");
                        };
                        value = PyValue::List(items);
                    }
                    Some(Open::Dict(entries, key)) => {
                        entries.push((std::mem::take(key), value));
                        if self.eat(b",") {
                            self.skip_whitespace();
                            *key = self.key()?;
                            continue 'value;
                        }
                        if !self.eat(b"}") {
                            return Err(self.syntax("Expecting ',' delimiter"));
                        }
                        let Some(Open::Dict(entries, _)) = open.pop() else {
                            unreachable!("the last open value is this dict");
                        };
                        value = PyValue::Dict(sorted_dict(entries));
                    }
                }
            }
        }
    }

    /// A dict key and its colon.
    fn key(&mut self) -> Result<PyStr, PyJsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.syntax("Expecting property name enclosed in double quotes"));
        }
        let key = self.string()?;
        self.skip_whitespace();
        if !self.eat(b":") {
            return Err(self.syntax("Expecting ':' delimiter"));
        }
        Ok(key)
    }

    /// A literal or a number.
    fn scalar(&mut self) -> Result<PyValue, PyJsonError> {
        for (literal, value) in [
            (&b"null"[..], PyValue::Null),
            (b"true", PyValue::Bool(true)),
            (b"false", PyValue::Bool(false)),
            (b"NaN", PyValue::Float(f64::NAN)),
            (b"Infinity", PyValue::Float(f64::INFINITY)),
            (b"-Infinity", PyValue::Float(f64::NEG_INFINITY)),
        ] {
            if self.eat(literal) {
                return Ok(value);
            }
        }
        self.number()
    }

    /// `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`, as Python's scanner matches
    /// it: a `.` or an exponent without digits after it ends the number
    /// before it.
    fn number(&mut self) -> Result<PyValue, PyJsonError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.pos += 1;
            }
            p.pos - from
        };
        self.eat(b"-");
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => {
                self.pos = start;
                return Err(self.syntax("Expecting value"));
            }
        }
        let mut float = false;
        if self.peek() == Some(b'.') && matches!(self.text.get(self.pos + 1), Some(b'0'..=b'9')) {
            self.pos += 1;
            digits(self);
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let before = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if digits(self) > 0 {
                float = true;
            } else {
                self.pos = before;
            }
        }
        // Only ASCII digits, signs, `.` and `e` were taken.
        let text = std::str::from_utf8(self.text.get(start..self.pos).unwrap_or_default())
            .unwrap_or_default();
        if float {
            // Rust's parse rounds correctly, like Python's `float()`, and
            // like it gives ±infinity on overflow and ±0.0 on underflow.
            return text
                .parse()
                .map(PyValue::Float)
                .map_err(|_| PyJsonError::Syntax {
                    expected: "Expecting value",
                    at: start,
                });
        }
        let (negative, magnitude) = match text.strip_prefix('-') {
            Some(m) => (m != "0", m),
            None => (false, text),
        };
        if magnitude.len() > MAX_INT_DIGITS {
            return Err(PyJsonError::IntTooLong { at: start });
        }
        Ok(PyValue::Int(if negative {
            text.to_owned()
        } else {
            magnitude.to_owned()
        }))
    }

    /// A string literal, from its opening quote.
    fn string(&mut self) -> Result<PyStr, PyJsonError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let run = self.pos;
            while matches!(self.peek(), Some(b) if b >= 0x20 && b != b'"' && b != b'\\') {
                self.pos += 1;
            }
            out.extend_from_slice(self.text.get(run..self.pos).unwrap_or_default());
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(PyStr(out));
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(_) => return Err(self.syntax("Invalid control character")),
                None => {
                    return Err(PyJsonError::Syntax {
                        expected: "Unterminated string starting",
                        at: start,
                    })
                }
            }
        }
    }

    /// An escape, from its backslash; appends what it stands for.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), PyJsonError> {
        let short = match self.text.get(self.pos + 1) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0C,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let mut cp = self.hex4(self.pos + 2)?;
                self.pos += 6;
                if (0xD800..0xDC00).contains(&cp)
                    && self.text.get(self.pos..self.pos + 2) == Some(b"\\u")
                {
                    let low = self.hex4(self.pos + 2)?;
                    if (0xDC00..0xE000).contains(&low) {
                        cp = 0x1_0000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                        self.pos += 6;
                    }
                }
                push_code_point(cp, out);
                return Ok(());
            }
            _ => return Err(self.syntax("Invalid \\escape")),
        };
        out.push(short);
        self.pos += 2;
        Ok(())
    }

    /// The four hex digits at `at`.
    fn hex4(&self, at: usize) -> Result<u32, PyJsonError> {
        let invalid = PyJsonError::Syntax {
            expected: "Invalid \\uXXXX escape",
            at: at.saturating_sub(1),
        };
        let digits = self.text.get(at..at + 4).ok_or_else(|| invalid.clone())?;
        digits.iter().try_fold(0u32, |acc, &d| {
            let v = char::from(d).to_digit(16).ok_or_else(|| invalid.clone())?;
            Ok(acc << 4 | v)
        })
    }
}

/// Appends `cp` encoded as UTF-8, surrogates on three bytes like any other
/// code point below U+10000.
fn push_code_point(cp: u32, out: &mut Vec<u8>) {
    // Each shifted value is masked to its bits, so the casts are lossless.
    let cont = |shift: u32| 0x80 | ((cp >> shift) & 0x3F) as u8;
    match cp {
        0..=0x7F => out.push(cp as u8),
        0x80..=0x7FF => out.extend([0xC0 | (cp >> 6) as u8, cont(0)]),
        0x800..=0xFFFF => out.extend([0xE0 | (cp >> 12) as u8, cont(6), cont(0)]),
        _ => out.extend([0xF0 | (cp >> 18) as u8, cont(12), cont(6), cont(0)]),
    }
}

/// A dict's entries in key order, a repeated key keeping its last value.
fn sorted_dict(mut entries: Vec<(PyStr, PyValue)>) -> Vec<(PyStr, PyValue)> {
    // Stable, so equal keys stay in the order they came.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(PyStr, PyValue)> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match out.last_mut() {
            Some(last) if last.0 == key => last.1 = value,
            _ => out.push((key, value)),
        }
    }
    out
}

impl PyValue {
    /// The value of `key`, if this is a dict that has it.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        let PyValue::Dict(entries) = self else {
            return None;
        };
        entries
            .binary_search_by(|(k, _)| k.0.as_slice().cmp(key.as_bytes()))
            .ok()
            .and_then(|i| entries.get(i))
            .map(|(_, v)| v)
    }

    /// The string, if this is a `str` without lone surrogates.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => s.as_str(),
            _ => None,
        }
    }

    /// The number as Python's `float(x)` gives it (an `int` too large for a
    /// float is infinite here, where Python raises), if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PyValue::Float(f) => Some(*f),
            PyValue::Int(digits) => digits.parse().ok(),
            _ => None,
        }
    }

    /// The number, if this is an `int` between 0 and `u64::MAX`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            PyValue::Int(digits) => digits.parse().ok(),
            _ => None,
        }
    }

    /// What `json.dumps(value, sort_keys=True)` prints: the legacy
    /// protocol's signed text (pure ASCII).
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(256);
        self.write_canonical(&mut out);
        out
    }

    /// Recursion follows the nesting, at most [`MAX_DEPTH`] for a parsed
    /// value: a few hundred kilobytes of stack at worst.
    fn write_canonical(&self, out: &mut String) {
        match self {
            PyValue::Null => out.push_str("null"),
            PyValue::Bool(true) => out.push_str("true"),
            PyValue::Bool(false) => out.push_str("false"),
            PyValue::Int(digits) => out.push_str(digits),
            PyValue::Float(f) => write_python_float(*f, out),
            PyValue::Str(s) => write_str_bytes(&s.0, out),
            PyValue::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_canonical(out);
                }
                out.push(']');
            }
            PyValue::Dict(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_str_bytes(&key.0, out);
                    out.push_str(": ");
                    value.write_canonical(out);
                }
                out.push('}');
            }
        }
    }

    /// The value for code that takes serde_json: every number is spelled
    /// as Python prints it (an `int` by its digits, a `float` by its
    /// `repr`, so `1E16` reads `1e+16`), and each lone surrogate becomes
    /// U+FFFD (two keys that then collide keep the later one).
    ///
    /// Non-finite floats stay `NaN`, `Infinity` and `-Infinity`, which
    /// serde_json then writes as such, as Python does: the only way to
    /// hold them in a [`Value`] is serde_json's `from_string_unchecked`,
    /// hidden but public under `arbitrary_precision`; a unit test pins it.
    pub fn to_json(&self) -> Value {
        match self {
            PyValue::Null => Value::Null,
            PyValue::Bool(b) => Value::Bool(*b),
            PyValue::Int(digits) => Value::Number(number(digits.clone())),
            PyValue::Float(f) => {
                let mut text = String::new();
                write_python_float(*f, &mut text);
                Value::Number(number(text))
            }
            PyValue::Str(s) => Value::String(s.to_string_lossy()),
            PyValue::List(items) => Value::Array(items.iter().map(PyValue::to_json).collect()),
            PyValue::Dict(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string_lossy(), v.to_json()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

/// A serde_json number that keeps `text` (a Python int or float repr).
fn number(text: String) -> Number {
    Number::from_str(&text).unwrap_or_else(|_| Number::from_string_unchecked(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        loads(text.as_bytes()).unwrap().canonical()
    }

    #[test]
    fn values_read_as_python_reads_them() {
        let cases: &[(&str, &str)] = &[
            (
                "10000000000000000000000000000000000000000",
                "10000000000000000000000000000000000000000",
            ),
            ("-0", "0"),
            ("-12", "-12"),
            ("1e16", "1e+16"),
            ("10000000000000001.0", "1e+16"),
            ("1E16", "1e+16"),
            ("1e-400", "0.0"),
            ("-0.0", "-0.0"),
            ("1e400", "Infinity"),
            (" [NaN, Infinity, -Infinity] ", "[NaN, Infinity, -Infinity]"),
            (r#""\ud800""#, r#""\ud800""#),
            (r#""\ud83d\ude00""#, r#""\ud83d\ude00""#),
            (r#""\ud800\u0041""#, r#""\ud800A""#),
            ("\"\u{e9}\u{1F600}\"", r#""\u00e9\ud83d\ude00""#),
            (r#""\/\b\f\n\r\t\"\\""#, r#""/\b\f\n\r\t\"\\""#),
            (r#"{"b": 1, "a": 2, "b": 3}"#, r#"{"a": 2, "b": 3}"#),
            (r#"{ }"#, "{}"),
            (r#"[ ]"#, "[]"),
            ("[1.5e, 2]", ""),
        ];
        for (text, want) in cases {
            if want.is_empty() {
                assert!(loads(text.as_bytes()).is_err(), "{text}");
            } else {
                assert_eq!(canon(text), *want, "{text}");
            }
        }
        // Encoded surrogates are two lone ones, as `surrogatepass` reads them.
        assert_eq!(
            loads(b"\"\xED\xA0\xBD\xED\xB8\x80\"").unwrap().canonical(),
            r#""\ud83d\ude00""#
        );
        assert_eq!(loads(b"\xEF\xBB\xBF[1]").unwrap().canonical(), "[1]");
    }

    #[test]
    fn what_python_refuses_is_refused_with_where() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "Expecting value at byte 0"),
            (b"[1,]", "Expecting value at byte 3"),
            (b"01", "Extra data at byte 1"),
            (b"1.", "Extra data at byte 1"),
            (b"-", "Expecting value at byte 0"),
            (
                b"{1: 2}",
                "Expecting property name enclosed in double quotes at byte 1",
            ),
            (b"{\"a\" 2}", "Expecting ':' delimiter at byte 5"),
            (b"[1 2]", "Expecting ',' delimiter at byte 3"),
            (b"\"a\nb\"", "Invalid control character at byte 2"),
            (b"\"\\x\"", "Invalid \\escape at byte 1"),
            (b"\"\\u12\"", "Invalid \\uXXXX escape at byte 2"),
            (b"\"abc", "Unterminated string starting at byte 0"),
            (b"nan", "Expecting value at byte 0"),
            (b"\"\xFF\"", "invalid UTF-8 at byte 1"),
            (b"[1] x", "Extra data at byte 4"),
        ];
        for (text, want) in cases {
            let got = loads(text).unwrap_err().to_string();
            assert_eq!(got, *want, "{}", String::from_utf8_lossy(text));
        }
        let long = "9".repeat(MAX_INT_DIGITS + 1);
        assert_eq!(
            loads(long.as_bytes()).unwrap_err(),
            PyJsonError::IntTooLong { at: 0 }
        );
        assert!(loads(&long.as_bytes()[1..]).is_ok());
        assert!(loads(format!("1.{long}").as_bytes()).is_ok());
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let deepest = loads(nested(MAX_DEPTH).as_bytes()).unwrap();
        assert_eq!(deepest.canonical(), nested(MAX_DEPTH));
        assert_eq!(
            serde_json::to_string(&deepest.to_json()).unwrap(),
            nested(MAX_DEPTH)
        );
        assert_eq!(
            loads(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err(),
            PyJsonError::TooDeep { at: MAX_DEPTH }
        );
        let hostile = "{\"a\":".repeat(100_000);
        assert!(matches!(
            loads(hostile.as_bytes()),
            Err(PyJsonError::TooDeep { .. })
        ));
    }

    #[test]
    fn the_view_spells_numbers_as_python_prints_them() {
        let v = loads(br#"{"big": 10000000000000000000000000000000000000000, "f": 1E16, "z": 1e-400, "n": NaN, "i": -Infinity, "s": "\ud800x"}"#).unwrap();
        let view = v.to_json();
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            "{\"big\":10000000000000000000000000000000000000000,\"f\":1e+16,\"i\":-Infinity,\"n\":NaN,\"s\":\"\u{fffd}x\",\"z\":0.0}"
        );
        // Serde_json's own writer over the view gives the same canonical
        // text, lone surrogates aside.
        assert_eq!(
            crate::canonical::to_python_json(&view),
            v.canonical().replace("\\ud800", "\\ufffd")
        );
        assert_eq!(v.get("big").and_then(PyValue::as_f64), Some(1e40));
        assert_eq!(v.get("missing"), None);
        assert_eq!(loads(b"7").unwrap().as_u64(), Some(7));
    }
}
