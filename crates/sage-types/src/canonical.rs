//! Python-compatible canonical JSON (the legacy protocol's signed bytes).
//!
//! The Python SAGE nodes sign `json.dumps(obj, sort_keys=True)` encoded as
//! UTF-8, and verify by re-serializing the object they parsed the same way.
//! A `sage` node that talks to them must therefore reproduce that output byte
//! for byte, or every signature it makes or checks is wrong. This module is a
//! writer for exactly that format, for a [`serde_json::Value`] parsed from
//! JSON text (the workspace enables serde_json's `arbitrary_precision`, so
//! every number keeps the text it was written with):
//!
//! - object keys sorted by Unicode code point, recursively;
//! - separators `", "` and `": "`, no other whitespace;
//! - `ensure_ascii`: `"` and `\` escaped, `\n` `\r` `\t` `\b` `\f` as short
//!   escapes, every other character outside `0x20..=0x7E` (0x7F included) as
//!   `\u00XX` with lowercase hex, and characters above U+FFFF as a UTF-16
//!   surrogate pair (`\ud83d\ude00`);
//! - a number without fraction or exponent is a Python `int` (arbitrary size,
//!   printed as written, `-0` as `0`); any other number is a Python `float`,
//!   printed as `repr(float)`: shortest round-trip digits, positional when the
//!   decimal exponent is in `[-4, 16)` (with `.0` added to integral values),
//!   otherwise scientific with a sign and at least two exponent digits
//!   (`1e-05`, `1e+16`); a float that overflows prints `Infinity`/`-Infinity`;
//! - `true`, `false`, `null`, `{}` and `[]`.
//!
//! See `docs/protocol.md`, "Legacy protocol".

use serde_json::{Map, Value};
use std::fmt::{self, Write as _};

/// Returns what Python 3's `json.dumps(value, sort_keys=True)` prints for
/// the value Python's `json.loads` would build from the same JSON text.
///
/// This is the legacy protocol's canonical form: the bytes to sign are this
/// string encoded as UTF-8 (it is pure ASCII).
///
/// ```
/// let v: serde_json::Value =
///     serde_json::from_str(r#"{"b": [1e16, -0, 50.0], "a": "é😀"}"#).expect("valid JSON");
/// assert_eq!(
///     sage_types::canonical::to_python_json(&v),
///     r#"{"a": "\u00e9\ud83d\ude00", "b": [1e+16, 0, 50.0]}"#
/// );
/// ```
#[must_use]
pub fn to_python_json(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_python_json(value, &mut out);
    out
}

/// Appends to `out` what [`to_python_json`] returns for `value`.
///
/// Use it to reuse one buffer across many values; nothing is allocated
/// besides the growth of `out`, one small vector for an object whose keys do
/// not already come in sorted order, and a short string for a float that sits
/// exactly between two shortest decimal forms (rare).
///
/// Recursion follows the nesting of `value`; a value parsed by serde_json is
/// at most 128 levels deep, which is safe.
pub fn write_python_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n.as_str(), out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

/// Writes an object with its keys sorted the way Python sorts `str`.
///
/// Python compares `str` by code point. Rust's `str: Ord` compares the UTF-8
/// bytes, and UTF-8 was designed so that byte-wise order equals code point
/// order (the lead byte grows with the code point's range and continuation
/// bytes compare in the same order as the bits they carry). So plain `str`
/// comparison is Python's order, astral characters included — unlike UTF-16
/// order, where U+10000.. (surrogates 0xD800..) sorts before U+E000..U+FFFF.
/// The differential test checks such keys against Python.
fn write_object(map: &Map<String, Value>, out: &mut String) {
    out.push('{');
    // With serde_json's default `BTreeMap` the keys already come sorted; with
    // `preserve_order` (an `IndexMap`, possibly switched on by feature
    // unification) they come in insertion order. Check instead of assuming.
    let already_sorted = map.keys().zip(map.keys().skip(1)).all(|(a, b)| a < b);
    if already_sorted {
        for (i, (key, value)) in map.iter().enumerate() {
            write_entry(i, key, value, out);
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        // Keys of a map are unique, so an unstable sort is deterministic.
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (i, (key, value)) in entries.into_iter().enumerate() {
            write_entry(i, key, value, out);
        }
    }
    out.push('}');
}

fn write_entry(index: usize, key: &str, value: &Value, out: &mut String) {
    if index > 0 {
        out.push_str(", ");
    }
    write_string(key, out);
    out.push_str(": ");
    write_python_json(value, out);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `\uXXXX` with lowercase hex, as Python's `ensure_ascii` encoder.
fn push_u_escape(unit: u32, out: &mut String) {
    out.push_str("\\u");
    for shift in [12u32, 8, 4, 0] {
        // The index is masked to 0..16, so it is always in bounds.
        out.push(char::from(HEX[((unit >> shift) & 0xF) as usize]));
    }
}

/// Writes a string literal as Python's `ensure_ascii=True` encoder does
/// (`py_encode_basestring_ascii` / its C twin).
fn write_string(s: &str, out: &mut String) {
    write_str_bytes(s.as_bytes(), out);
}

/// [`write_string`] for a string in UTF-8 that may also hold lone
/// surrogates (U+D800..U+DFFF, three bytes each, as Python's `surrogatepass`
/// encodes them): each is written as its own `\uXXXX`, as Python does.
pub(crate) fn write_str_bytes(s: &[u8], out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Runs of characters that need no escape are copied in one piece.
    let mut run_start = 0;
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        push_ascii_run(s.get(run_start..i).unwrap_or_default(), out);
        let (cp, len) = decode_code_point(s.get(i..).unwrap_or_default());
        i += len;
        run_start = i;
        match cp {
            0x22 => out.push_str("\\\""),
            0x5C => out.push_str("\\\\"),
            0x0A => out.push_str("\\n"),
            0x0D => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0C => out.push_str("\\f"),
            cp if cp < 0x1_0000 => push_u_escape(cp, out),
            cp => {
                // UTF-16 surrogate pair, as Python writes astral chars.
                let v = cp - 0x1_0000;
                push_u_escape(0xD800 | (v >> 10), out);
                push_u_escape(0xDC00 | (v & 0x3FF), out);
            }
        }
    }
    push_ascii_run(s.get(run_start..).unwrap_or_default(), out);
    out.push('"');
}

/// Copies a run of printable ASCII, which is always valid UTF-8: dropping
/// it instead would change the signed bytes.
fn push_ascii_run(run: &[u8], out: &mut String) {
    out.push_str(std::str::from_utf8(run).expect("printable ASCII is UTF-8"));
}

/// The code point at the start of `s` (UTF-8, lone surrogates allowed) and
/// its length in bytes. Only called on well-formed text; a malformed byte
/// reads as U+FFFD of length one, so the caller always advances.
pub(crate) fn decode_code_point(s: &[u8]) -> (u32, usize) {
    let continuation = |k: usize| s.get(k).map(|&b| u32::from(b & 0x3F));
    let lead = s.first().copied().unwrap_or(0);
    let decoded = match lead {
        0x00..=0x7F => Some((u32::from(lead), 1)),
        0xC0..=0xDF => continuation(1).map(|c1| ((u32::from(lead & 0x1F) << 6) | c1, 2)),
        0xE0..=0xEF => continuation(1)
            .zip(continuation(2))
            .map(|(c1, c2)| ((u32::from(lead & 0x0F) << 12) | (c1 << 6) | c2, 3)),
        0xF0..=0xF7 => continuation(1)
            .zip(continuation(2))
            .zip(continuation(3))
            .map(|((c1, c2), c3)| {
                (
                    (u32::from(lead & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3,
                    4,
                )
            }),
        _ => None,
    };
    decoded.unwrap_or((0xFFFD, 1))
}

/// Writes a JSON number (its source text) as Python prints what
/// `json.loads` makes of it.
///
/// Python's scanner (`NUMBER_RE = -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`)
/// makes an `int` when there is neither fraction nor exponent, else a
/// `float` of the whole text.
fn write_number(text: &str, out: &mut String) {
    // Python's non-finite floats, which `pyjson` views keep as their text.
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        out.push_str(text);
    } else if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        match text.parse::<f64>() {
            // Rust's parse rounds correctly, like Python's `float()`, and
            // like it gives ±infinity on overflow and ±0.0 on underflow.
            Ok(f) => write_python_float(f, out),
            // Unreachable for a serde_json `Number`, whose text is always a
            // valid JSON number; keep the text rather than panic.
            Err(_) => out.push_str(text),
        }
    } else {
        write_python_int(text, out);
    }
}

/// Writes an integer's text as Python's `repr(int(text))`: `-0` becomes `0`
/// (and, defensively, leading zeros, which JSON forbids, are dropped).
fn write_python_int(text: &str, out: &mut String) {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        out.push('0');
    } else {
        if negative {
            out.push('-');
        }
        out.push_str(digits);
    }
}

/// Collects the output of `format!("{:e}", x)` for a finite positive `x`
/// (`d[.ddd]e[-]X`) as its digits and decimal exponent, on the stack.
struct SciDigits {
    digits: [u8; 24],
    len: usize,
    in_exponent: bool,
    exponent_negative: bool,
    exponent: i32,
}

impl SciDigits {
    fn of(x: f64) -> Option<Self> {
        let mut sci = SciDigits {
            digits: [0; 24],
            len: 0,
            in_exponent: false,
            exponent_negative: false,
            exponent: 0,
        };
        write!(sci, "{x:e}").ok()?;
        if sci.len == 0 || !sci.in_exponent {
            return None;
        }
        if sci.exponent_negative {
            sci.exponent = -sci.exponent;
        }
        Some(sci)
    }

    fn digits(&self) -> &[u8] {
        self.digits.get(..self.len).unwrap_or(&[])
    }

    /// The digits as an integer (at most 17 digits, so it fits).
    fn significand(&self) -> u64 {
        self.digits().iter().fold(0u64, |acc, &d| {
            acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
        })
    }

    /// Makes a tie between two shortest candidates go to the even one, as
    /// Python does.
    ///
    /// Sometimes two candidates with the fewest digits round-trip and lie
    /// *exactly* as far from the double, e.g. 1000000000000000.25 (exactly
    /// representable) between `...0.2` and `...0.3`. CPython's dtoa (mode 0)
    /// then takes the even last digit (`1000000000000000.2`); Rust's `{:e}`
    /// takes the other one (`...0.3`). Found by the differential test.
    ///
    /// A tie needs the double's exact decimal expansion to end one digit past
    /// the candidates with a 5, so it is decided in integer arithmetic.
    fn break_tie_to_even(&mut self, x: f64) {
        let n = self.len;
        if n == 0 || n > 17 {
            return;
        }
        let d = self.significand();
        if d % 2 == 0 {
            return; // already even: nothing to change, tie or not
        }
        // Exponent of the last digit: x ~ d * 10^last_exp.
        let last_exp = self.exponent - (n as i32 - 1);
        let (m, q) = odd_mantissa_and_exponent(x);
        let lowest_n_digit = 10u64.pow(n as u32 - 1);
        let highest_n_digit = lowest_n_digit.saturating_mul(10) - 1;
        for neighbour in [d.checked_sub(1), d.checked_add(1)].into_iter().flatten() {
            if neighbour < lowest_n_digit || neighbour > highest_n_digit {
                continue;
            }
            // Midpoint of d and neighbour = (d + neighbour) * 5 * 10^(last_exp - 1).
            let Some(mid) = (d + neighbour).checked_mul(5) else {
                continue;
            };
            if !dyadic_equals_decimal(m, q, mid, last_exp - 1) {
                continue;
            }
            // A tie. The even candidate must still round-trip (next to a
            // power of two the interval below is half as wide); Python only
            // takes a candidate that does.
            let round_trips = format!("{neighbour}e{last_exp}")
                .parse::<f64>()
                .is_ok_and(|back| back.to_bits() == x.to_bits());
            if round_trips {
                self.set_significand(neighbour);
            }
            return;
        }
    }

    /// Replaces the digits by those of `value` (same count), dropping
    /// trailing zeros (keeping at least one digit); the exponent of the
    /// leading digit is unchanged.
    fn set_significand(&mut self, mut value: u64) {
        for slot in self.digits.iter_mut().take(self.len).rev() {
            // `value % 10` is a single digit.
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
        while self.len > 1 && self.digits.get(self.len - 1) == Some(&b'0') {
            self.len -= 1;
        }
    }
}

/// `x` (finite, non-zero) as `m * 2^q` with `m` odd.
fn odd_mantissa_and_exponent(x: f64) -> (u64, i32) {
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7FF) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    let (m, q) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), biased - 1075)
    };
    let tz = m.trailing_zeros();
    (m >> tz, q + tz as i32)
}

/// Whether `m * 2^q` (with `m` odd) equals `s * 10^k` (with `s` odd).
fn dyadic_equals_decimal(m: u64, q: i32, s: u64, k: i32) -> bool {
    if k >= 0 {
        // s * 10^k = (s * 5^k) * 2^k, and s * 5^k is odd.
        q == k
            && 5u128
                .checked_pow(k.unsigned_abs())
                .and_then(|p| p.checked_mul(u128::from(s)))
                == Some(u128::from(m))
    } else {
        // s / 10^j = (s / 5^j) / 2^j, so 5^j must divide s, leaving m.
        let j = k.unsigned_abs();
        q == k
            && 5u64
                .checked_pow(j)
                .is_some_and(|p| s % p == 0 && s / p == m)
    }
}

impl fmt::Write for SciDigits {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            match b {
                b'0'..=b'9' if !self.in_exponent => {
                    let slot = self.digits.get_mut(self.len).ok_or(fmt::Error)?;
                    *slot = b;
                    self.len += 1;
                }
                b'0'..=b'9' => {
                    self.exponent = self
                        .exponent
                        .checked_mul(10)
                        .and_then(|e| e.checked_add(i32::from(b - b'0')))
                        .ok_or(fmt::Error)?;
                }
                b'.' if !self.in_exponent => {}
                b'e' if !self.in_exponent => self.in_exponent = true,
                b'-' if self.in_exponent => self.exponent_negative = true,
                _ => return Err(fmt::Error),
            }
        }
        Ok(())
    }
}

fn push_ascii_digits(digits: &[u8], out: &mut String) {
    out.extend(digits.iter().map(|&b| char::from(b)));
}

fn push_zeros(count: usize, out: &mut String) {
    out.extend(std::iter::repeat_n('0', count));
}

/// Writes `f` as Python's `json.dumps` does: `repr(float)` for finite values,
/// `Infinity`, `-Infinity` and `NaN` otherwise (`allow_nan=True`).
///
/// `repr(float)` is CPython's `float_repr_style == 'short'`: the shortest
/// digits that round-trip (Rust's `{:e}` gives them, except that an exact
/// tie between two shortest candidates is settled as CPython does, see
/// [`SciDigits::break_tie_to_even`]), positional
/// when the scientific exponent `e` satisfies `-4 <= e < 16`, with `.0` added
/// when there is no fraction, else `d[.ddd]e±XX`.
pub(crate) fn write_python_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    let x = f.abs();
    if x == 0.0 {
        out.push_str("0.0");
        return;
    }
    let Some(mut sci) = SciDigits::of(x) else {
        // Unreachable: `{:e}` of a finite f64 is at most 17 digits and a
        // three-digit exponent. Fall back to Rust's own shortest form.
        let _ = write!(out, "{x:e}");
        return;
    };
    sci.break_tie_to_even(x);
    let digits = sci.digits();
    let exp = sci.exponent;
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            // `exp` is in 0..16 here, so the conversion is lossless.
            let int_len = exp.unsigned_abs() as usize + 1;
            if digits.len() <= int_len {
                push_ascii_digits(digits, out);
                push_zeros(int_len - digits.len(), out);
                out.push_str(".0");
            } else {
                let (int_part, frac_part) = digits.split_at(int_len);
                push_ascii_digits(int_part, out);
                out.push('.');
                push_ascii_digits(frac_part, out);
            }
        } else {
            out.push_str("0.");
            push_zeros(exp.unsigned_abs() as usize - 1, out);
            push_ascii_digits(digits, out);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        push_ascii_digits(first, out);
        if !rest.is_empty() {
            out.push('.');
            push_ascii_digits(rest, out);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let e = exp.unsigned_abs();
        if e >= 100 {
            out.push(char::from(b'0' + (e / 100 % 10) as u8));
        }
        out.push(char::from(b'0' + (e / 10 % 10) as u8));
        out.push(char::from(b'0' + (e % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(json: &str) -> String {
        let value: Value = serde_json::from_str(json).expect("test input is valid JSON");
        to_python_json(&value)
    }

    fn float_repr(f: f64) -> String {
        let mut out = String::new();
        write_python_float(f, &mut out);
        out
    }

    /// JSON number text -> what Python's json.dumps(json.loads(text)) prints
    /// (every expectation checked against CPython 3.11).
    #[test]
    fn numbers_from_text() {
        let cases: &[(&str, &str)] = &[
            // ints
            ("0", "0"),
            ("-0", "0"),
            ("7", "7"),
            ("-7", "-7"),
            ("123456789012345678", "123456789012345678"),
            (
                "-123456789012345678901234567890123456789012345678901234567890",
                "-123456789012345678901234567890123456789012345678901234567890",
            ),
            ("18446744073709551616", "18446744073709551616"),
            // floats, positional range
            ("50.0", "50.0"),
            ("50.00", "50.0"),
            ("5e1", "50.0"),
            ("5E+1", "50.0"),
            ("-0.0", "-0.0"),
            ("0.0", "0.0"),
            ("0e0", "0.0"),
            ("-0e5", "-0.0"),
            ("2.5", "2.5"),
            ("0.1", "0.1"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("0.0001", "0.0001"),
            ("1e-4", "0.0001"),
            ("0.00012345", "0.00012345"),
            ("1234567890123456.0", "1234567890123456.0"),
            ("9999999999999998.0", "9999999999999998.0"),
            ("1764554689.25", "1764554689.25"),
            ("123.456e2", "12345.6"),
            // ties between two shortest candidates go to the even digit
            ("1000000000000000.25", "1000000000000000.2"),
            ("1000000000000000.75", "1000000000000000.8"),
            ("1169024975840704.25", "1169024975840704.2"),
            ("-1000000000000001.25", "-1000000000000001.2"),
            ("999999999999998.25", "999999999999998.2"),
            ("562949953421312.125", "562949953421312.1"),
            // floats, scientific range
            ("0.00001", "1e-05"),
            ("1e-5", "1e-05"),
            ("0.000012345", "1.2345e-05"),
            ("1e16", "1e+16"),
            ("10000000000000000.0", "1e+16"),
            ("12345678901234567.0", "1.2345678901234568e+16"),
            ("1e22", "1e+22"),
            ("1e23", "1e+23"),
            ("1.5e300", "1.5e+300"),
            ("-1.5e-300", "-1.5e-300"),
            ("5e-324", "5e-324"),
            ("4.9406564584124654e-324", "5e-324"),
            ("2.2250738585072014e-308", "2.2250738585072014e-308"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("1e100", "1e+100"),
            // overflow and underflow
            ("1e400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("1.7976931348623159e308", "Infinity"),
            ("1e-400", "0.0"),
            ("-1e-400", "-0.0"),
        ];
        for (input, expected) in cases {
            assert_eq!(canon(input), *expected, "number text {input}");
        }
    }

    #[test]
    fn floats_from_values() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (f64::MAX, "1.7976931348623157e+308"),
            (-f64::MAX, "-1.7976931348623157e+308"),
            (f64::from_bits(1), "5e-324"),
            (f64::EPSILON, "2.220446049250313e-16"),
            (9007199254740993.0, "9007199254740992.0"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for (f, expected) in cases {
            assert_eq!(float_repr(*f), *expected, "float {f:e}");
        }
    }

    #[test]
    fn string_escapes() {
        let cases: &[(&str, &str)] = &[
            ("", r#""""#),
            ("plain / text ~", r#""plain / text ~""#),
            ("\"", r#""\"""#),
            ("\\", r#""\\""#),
            ("\n\r\t\u{8}\u{c}", r#""\n\r\t\b\f""#),
            ("\u{0}\u{1}\u{1f}", r#""\u0000\u0001\u001f""#),
            ("\u{7f}", r#""\u007f""#),
            ("\u{80}\u{e9}\u{ff}", r#""\u0080\u00e9\u00ff""#),
            (
                "\u{2192}\u{2028}\u{feff}\u{ffff}",
                r#""\u2192\u2028\ufeff\uffff""#,
            ),
            ("\u{1F600}", r#""\ud83d\ude00""#),
            ("\u{10000}\u{10FFFF}", r#""\ud800\udc00\udbff\udfff""#),
            ("a\u{e9}b\u{1F600}c\"d", r#""a\u00e9b\ud83d\ude00c\"d""#),
        ];
        for (input, expected) in cases {
            let got = to_python_json(&Value::String((*input).to_owned()));
            assert_eq!(got, *expected, "string {input:?}");
        }
    }

    #[test]
    fn containers_and_key_order() {
        let cases: &[(&str, &str)] = &[
            ("{}", "{}"),
            ("[]", "[]"),
            ("[{}, [], [[]]]", "[{}, [], [[]]]"),
            ("[true,false,null]", "[true, false, null]"),
            (
                r#"{"b":1,"a":{"d":[],"c":{}}}"#,
                r#"{"a": {"c": {}, "d": []}, "b": 1}"#,
            ),
            (
                r#"{"z":0,"é":1,"Z":2,"_":3,"":4}"#,
                r#"{"": 4, "Z": 2, "_": 3, "z": 0, "\u00e9": 1}"#,
            ),
            // Code point order, not UTF-16 order: U+FFFF < U+10000.
            (
                "{\"\u{10000}\":1,\"\u{ffff}\":2,\"\u{e000}\":3,\"a\":4}",
                r#"{"a": 4, "\ue000": 3, "\uffff": 2, "\ud800\udc00": 1}"#,
            ),
            // A prefix sorts first.
            (r#"{"ab":1,"a":2}"#, r#"{"a": 2, "ab": 1}"#),
            // Duplicate keys: the last one wins, as in Python's dict.
            (r#"{"a":1,"a":2}"#, r#"{"a": 2}"#),
        ];
        for (input, expected) in cases {
            assert_eq!(canon(input), *expected, "input {input}");
        }
    }

    #[test]
    fn unsorted_map_is_sorted() {
        // Whatever map type serde_json uses, an object built out of order
        // must still come out sorted.
        let mut map = Map::new();
        map.insert("b".to_owned(), Value::from(1));
        map.insert("a".to_owned(), Value::from(2));
        map.insert("\u{e9}".to_owned(), Value::from(3));
        assert_eq!(
            to_python_json(&Value::Object(map)),
            r#"{"a": 2, "b": 1, "\u00e9": 3}"#
        );
    }

    #[test]
    fn write_appends() {
        let mut out = String::from("prefix:");
        write_python_json(&Value::Bool(true), &mut out);
        write_python_json(&Value::Null, &mut out);
        assert_eq!(out, "prefix:truenull");
    }

    #[test]
    fn utf8_byte_order_is_code_point_order() {
        let samples = [
            '\u{0}',
            'A',
            'z',
            '\u{7f}',
            '\u{80}',
            '\u{7ff}',
            '\u{800}',
            '\u{d7ff}',
            '\u{e000}',
            '\u{ffff}',
            '\u{10000}',
            '\u{10ffff}',
        ];
        for a in samples {
            for b in samples {
                let (sa, sb) = (a.to_string(), b.to_string());
                assert_eq!(
                    sa.cmp(&sb),
                    u32::from(a).cmp(&u32::from(b)),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
}
