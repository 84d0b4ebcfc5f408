//! The canonical writer against Python itself.
//!
//! 1. The golden vectors of the legacy protocol (made by the Python
//!    original): `to_python_json(signable) == canonical`, byte for byte, also
//!    after parsing the request/response body the way a receiver does.
//! 2. A differential test: thousands of generated JSON texts (deep nesting,
//!    every escape class, astral and non-ASCII keys and strings, floats over
//!    the whole f64 range, huge ints) are fed in ONE batch to a single
//!    `python3` process doing `json.dumps(json.loads(line), sort_keys=True)`,
//!    and every answer must equal ours. `python3` must be on PATH (CI
//!    installs it); without it the test fails.
//!
//! Knobs: `SAGE_DIFF_SEED` (u64) picks another generator seed,
//! `SAGE_DIFF_CASES` the number of generated values (default 3000),
//! `SAGE_DIFF_FLOATS` the number of random doubles in the flat float sweep
//! (default 12000).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::string::string_regex;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sage_types::canonical::{to_python_json, write_python_json};
use serde_json::Value;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// The golden vectors, made by running the Python original:
/// `<repo>/tests/data/legacy-v0.json`.
const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/legacy-v0.json"
);

fn load_vectors() -> Value {
    let text = std::fs::read_to_string(VECTORS)
        .unwrap_or_else(|e| panic!("cannot read the golden vectors at {VECTORS}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{VECTORS} is not JSON: {e}"))
}

/// (vector list, body field, key of the signed object inside the body)
const VECTOR_KINDS: [(&str, &str, &str); 2] = [
    ("tasks", "request_body", "task"),
    ("proofs", "response_body", "proof"),
];

#[test]
fn golden_vectors_match_python_canonical() {
    let vectors = load_vectors();
    let mut checked = 0;
    for (kind, body_field, inner_key) in VECTOR_KINDS {
        let entries = vectors[kind]
            .as_array()
            .unwrap_or_else(|| panic!("vectors have no {kind:?} list"));
        assert!(!entries.is_empty(), "no {kind} vectors");
        for (i, entry) in entries.iter().enumerate() {
            let expected = entry["canonical"]
                .as_str()
                .unwrap_or_else(|| panic!("{kind}[{i}] has no canonical string"));
            assert!(entry["signable"].is_object(), "{kind}[{i}] has no signable");

            let got = to_python_json(&entry["signable"]);
            assert_eq!(got, expected, "{kind}[{i}]: canonical(signable)");

            // What a receiver does: parse the body text as it came over the
            // wire and re-serialize the signed object in it.
            let body_text = entry[body_field]
                .as_str()
                .unwrap_or_else(|| panic!("{kind}[{i}] has no {body_field}"));
            let body: Value = serde_json::from_str(body_text)
                .unwrap_or_else(|e| panic!("{kind}[{i}].{body_field} is not JSON: {e}"));
            assert!(
                body[inner_key].is_object(),
                "{kind}[{i}]: body lacks {inner_key:?}"
            );
            assert_eq!(
                to_python_json(&body[inner_key]),
                expected,
                "{kind}[{i}]: canonical({body_field}.{inner_key})"
            );

            // The appending form gives the same bytes after a prefix.
            let mut buf = String::from("x");
            write_python_json(&body[inner_key], &mut buf);
            assert_eq!(
                buf.strip_prefix('x'),
                Some(expected),
                "{kind}[{i}]: write_python_json"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} vectors checked");
}

// ---------------------------------------------------------------------------
// Differential test against python3.
// ---------------------------------------------------------------------------

/// Reads JSON texts, one a line, and prints `json.dumps(..., sort_keys=True)`
/// of each, one a line (an error becomes a `PYTHON-ERROR` line so that the
/// lines stay aligned).
const PYTHON_SCRIPT: &str = r#"
import json, sys
out = sys.stdout
for raw in sys.stdin.buffer:
    try:
        out.write(json.dumps(json.loads(raw.decode("utf-8")), sort_keys=True))
    except Exception as e:
        out.write("PYTHON-ERROR " + ascii(e))
    out.write("\n")
out.flush()
"#;

/// Runs the whole batch through ONE python3 process; returns one line per
/// input and python's version.
fn python_batch(inputs: &[String]) -> (Vec<String>, String) {
    let version = Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| {
            panic!(
                "python3 is required by this differential test and was not found on PATH \
                 ({e}); install python3 (CI does)"
            )
        });

    let mut stdin_text = String::with_capacity(inputs.iter().map(|s| s.len() + 1).sum());
    for input in inputs {
        assert!(
            !input.contains('\n'),
            "a case contains a raw newline: {input:?}"
        );
        stdin_text.push_str(input);
        stdin_text.push('\n');
    }

    let mut child = Command::new("python3")
        .args(["-c", PYTHON_SCRIPT])
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start python3: {e}"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Write from another thread while this one drains stdout.
    let writer = std::thread::spawn(move || stdin.write_all(stdin_text.as_bytes()));
    let output = child.wait_with_output().expect("python3 runs");
    writer
        .join()
        .expect("stdin writer thread")
        .expect("writing the batch to python3");
    assert!(
        output.status.success(),
        "python3 failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("python3 printed UTF-8");
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert_eq!(
        lines.len(),
        inputs.len(),
        "python3 answered {} lines for {} inputs",
        lines.len(),
        inputs.len()
    );
    (lines, version)
}

/// A generated JSON value; numbers and strings hold their JSON source text,
/// so the generator also decides how each is written.
#[derive(Clone, Debug)]
enum Gen {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Gen>),
    Obj(Vec<(String, Gen)>),
}

impl Gen {
    fn render(&self, out: &mut String) {
        match self {
            Gen::Null => out.push_str("null"),
            Gen::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Gen::Num(text) | Gen::Str(text) => out.push_str(text),
            Gen::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Gen::Obj(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(key);
                    out.push(':');
                    value.render(out);
                }
                out.push('}');
            }
        }
    }

    fn depth(&self) -> usize {
        match self {
            Gen::Arr(items) => 1 + items.iter().map(Gen::depth).max().unwrap_or(0),
            Gen::Obj(entries) => 1 + entries.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }
}

fn u_escape(unit: u32, upper: bool, out: &mut String) {
    if upper {
        out.push_str(&format!("\\u{unit:04X}"));
    } else {
        out.push_str(&format!("\\u{unit:04x}"));
    }
}

fn u_escape_char(c: char, upper: bool, out: &mut String) {
    let cp = u32::from(c);
    if cp < 0x1_0000 {
        u_escape(cp, upper, out);
    } else {
        let v = cp - 0x1_0000;
        u_escape(0xD800 | (v >> 10), upper, out);
        u_escape(0xDC00 | (v & 0x3FF), upper, out);
    }
}

fn short_escape(c: char) -> Option<&'static str> {
    Some(match c {
        '"' => "\\\"",
        '\\' => "\\\\",
        '/' => "\\/",
        '\u{8}' => "\\b",
        '\u{c}' => "\\f",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        _ => return None,
    })
}

/// Appends `c` to a JSON string literal, written in one of several legal
/// ways chosen by `mode`.
fn encode_char(c: char, mode: u8, out: &mut String) {
    let must_escape = c == '"' || c == '\\' || u32::from(c) < 0x20;
    match mode % 4 {
        1 => u_escape_char(c, false, out),
        2 => u_escape_char(c, true, out),
        3 => match short_escape(c) {
            Some(esc) => out.push_str(esc),
            None if !must_escape => out.push(c),
            None => u_escape_char(c, false, out),
        },
        _ if !must_escape => out.push(c),
        _ => match short_escape(c) {
            Some(esc) => out.push_str(esc),
            None => u_escape_char(c, false, out),
        },
    }
}

fn literal(chars: &[(char, u8)]) -> String {
    let mut out = String::from("\"");
    for &(c, mode) in chars {
        encode_char(c, mode, &mut out);
    }
    out.push('"');
    out
}

/// Characters from every class the encoder treats differently.
fn interesting_char() -> BoxedStrategy<char> {
    let from_range = |lo: u32, hi: u32| (lo..=hi).prop_filter_map("surrogate", char::from_u32);
    prop_oneof![
        8 => from_range(0x20, 0x7E),
        2 => prop::sample::select(vec!['"', '\\', '/', '\n', '\r', '\t', '\u{8}', '\u{c}']),
        2 => from_range(0x00, 0x1F),
        1 => Just('\u{7f}'),
        2 => from_range(0x80, 0x7FF),
        2 => from_range(0x800, 0xFFFF),
        2 => from_range(0x1_0000, 0x10_FFFF),
        1 => prop::sample::select(vec![
            '\u{2028}', '\u{2029}', '\u{feff}', '\u{fffe}', '\u{ffff}', '\u{e000}', '\u{d7ff}',
            '\u{10000}', '\u{10ffff}', '\u{1F600}', '\u{e9}', '\u{2192}',
        ]),
    ]
    .boxed()
}

fn string_literal() -> BoxedStrategy<String> {
    vec((interesting_char(), any::<u8>()), 0..16)
        .prop_map(|chars| literal(&chars))
        .boxed()
}

/// Keys: often from a small pool (so that objects get close, prefix and
/// duplicate keys, and keys where code point and UTF-16 order differ),
/// otherwise like any string.
fn key_literal() -> BoxedStrategy<String> {
    let pool: Vec<&'static str> = vec![
        "",
        "a",
        "b",
        "A",
        "Z",
        "_",
        "ab",
        "a\u{0}",
        "\u{7f}",
        "\u{e9}",
        "e\u{301}",
        "\u{e000}",
        "\u{ffff}",
        "\u{10000}",
        "\u{1F600}",
        "\u{1F600}a",
        "\"",
        "\\",
    ];
    prop_oneof![
        1 => (prop::sample::select(pool), any::<u8>()).prop_map(|(key, mode)| {
            let chars: Vec<(char, u8)> = key.chars().map(|c| (c, mode)).collect();
            literal(&chars)
        }),
        2 => string_literal(),
    ]
    .boxed()
}

fn finite(bits: u64) -> Option<f64> {
    let f = f64::from_bits(bits);
    f.is_finite().then_some(f)
}

/// Writes a finite f64 as JSON text that stays a float, in one of several
/// forms (Rust's `{:e}` and `{:?}` are shortest round-trip; `{:.Ne}` gives
/// more digits, exercising correct rounding on both sides).
fn float_text(f: f64, mode: u8) -> String {
    match mode % 6 {
        0 => format!("{f:e}"),
        1 => format!("{f:?}"),
        2 => format!("{f:.20e}"),
        3 => format!("{f:.16e}"),
        4 => format!("{f:E}").replace("E-", "e-").replace('E', "E+"),
        _ => format!("{f:.3e}"),
    }
}

fn number_text() -> BoxedStrategy<String> {
    prop_oneof![
        // ints, up to 60 digits, and -0
        3 => string_regex("-?(0|[1-9][0-9]{0,59})").expect("regex"),
        // decimal texts in every shape JSON allows (also overflowing and
        // underflowing exponents)
        3 => string_regex("-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?")
            .expect("regex"),
        // any finite double
        3 => (any::<u64>().prop_filter_map("finite", finite), any::<u8>())
            .prop_map(|(f, mode)| float_text(f, mode)),
        // subnormals
        1 => (1u64..(1u64 << 52), any::<bool>(), any::<u8>()).prop_map(|(bits, neg, mode)| {
            let f = f64::from_bits(bits);
            float_text(if neg { -f } else { f }, mode)
        }),
        // integral floats
        1 => (any::<i64>(), any::<bool>()).prop_map(|(i, e)| {
            if e { format!("{i}e0") } else { format!("{i}.0") }
        }),
        // around the positional/scientific switch (e in -4..16)
        2 => (1u32..100_000, -12i32..24, any::<bool>())
            .prop_map(|(m, e, neg)| format!("{}{m}e{e}", if neg { "-" } else { "" })),
        1 => prop::sample::select(vec!["0.0", "-0.0", "0", "-0", "1e400", "-1e400", "5e-324"])
            .prop_map(str::to_owned),
    ]
    .boxed()
}

fn value_strategy() -> BoxedStrategy<Gen> {
    let leaf = prop_oneof![
        1 => Just(Gen::Null),
        1 => any::<bool>().prop_map(Gen::Bool),
        4 => number_text().prop_map(Gen::Num),
        3 => string_literal().prop_map(Gen::Str),
    ];
    leaf.prop_recursive(6, 256, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Gen::Arr),
            vec((key_literal(), inner), 0..6).prop_map(Gen::Obj),
        ]
    })
    .boxed()
}

fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    Some(
        raw.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={raw:?} is not a u64: {e}")),
    )
}

/// SplitMix64, for the flat float sweep.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Flat float cases: random doubles, subnormals, every power of ten and its
/// neighbours, and integral values around 2^53 and 1e16.
fn float_sweep(seed: u64, random_doubles: usize) -> Vec<String> {
    let mut cases = Vec::new();
    let mut state = seed;
    let mut mode = 0u8;
    let mut push = |f: f64, cases: &mut Vec<String>| {
        mode = mode.wrapping_add(1);
        cases.push(float_text(f, mode));
    };
    while cases.len() < random_doubles {
        if let Some(f) = finite(splitmix64(&mut state)) {
            push(f, &mut cases);
        }
    }
    for _ in 0..2_000 {
        let mantissa = splitmix64(&mut state) & ((1u64 << 52) - 1);
        let sign = (splitmix64(&mut state) >> 63) << 63;
        let bits = mantissa | sign;
        push(f64::from_bits(bits), &mut cases);
    }
    // Dyadic values m / 2^j with few fraction bits: their exact decimal
    // expansion is short, which is where two shortest candidates can tie
    // (e.g. 1000000000000000.25, which Python prints ...0.2).
    for _ in 0..random_doubles.div_ceil(2) {
        let m = splitmix64(&mut state) >> (11 + splitmix64(&mut state) % 30);
        let j = (splitmix64(&mut state) % 40) as i32 - 8;
        // m < 2^53 converts exactly; scaling by a power of two is exact.
        let f = m as f64 * 2f64.powi(-j);
        push(f, &mut cases);
    }
    for k in -325i32..=309 {
        let Ok(p) = format!("1e{k}").parse::<f64>() else {
            continue;
        };
        for delta in [-2i64, -1, 0, 1, 2] {
            if let Some(f) = p.to_bits().checked_add_signed(delta).and_then(finite) {
                push(f, &mut cases);
                push(-f, &mut cases);
            }
        }
    }
    for base in [9_007_199_254_740_992.0f64, 1e16, 1e15, 1e17, 1e-4, 1e-5] {
        for delta in -20i64..=20 {
            if let Some(f) = base.to_bits().checked_add_signed(delta).and_then(finite) {
                push(f, &mut cases);
            }
        }
    }
    cases
}

/// Texts worth checking whatever the generator draws.
const EDGE_TEXTS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "-0.0",
    "0e0",
    "-0e0",
    "0E-0",
    "1",
    "-1",
    "1.0",
    "1e0",
    "1E+0",
    "50.0",
    "0.0001",
    "0.00001",
    "0.000099999999999999991",
    "9999999999999998.0",
    "9999999999999999.0",
    "1e15",
    "1e16",
    "1e17",
    "1e21",
    "1e22",
    "1e23",
    "1234567890123456.0",
    "12345678901234567.0",
    "0.1",
    "0.2",
    "0.3",
    "0.30000000000000004",
    "2.5",
    "1.5e300",
    "-1.5e-300",
    "5e-324",
    "2.4703282292062327e-324",
    "2.4703282292062328e-324",
    "4.9406564584124654e-324",
    "2.2250738585072011e-308",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "1.7976931348623158e308",
    "1.7976931348623159e308",
    "1e308",
    "1e309",
    "1e400",
    "-1e400",
    "1e-400",
    "-1e-400",
    "123456789012345678",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890123456789012345678901234567890",
    "[]",
    "{}",
    "[[]]",
    "[{}]",
    "{\"a\":{}}",
    "true",
    "false",
    "null",
    "\"\"",
    "\"\\u0000\\u001f\\u007f\\u0080\\u00ff\\u0100\\uffff\\ud800\\udc00\\udbff\\udfff\"",
    "\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
    "{\"\\ud800\\udc00\":1,\"\\uffff\":2,\"\\ue000\":3,\"\\ud7ff\":4,\"a\":5,\"\":6}",
    "{\"a\":1,\"a\":2,\"b\":{\"b\":1,\"b\":[]}}",
    "{\"b\":1,\"a\":{\"d\":[],\"c\":{}},\"\u{e9}\":\"\u{1F600}\"}",
];

#[test]
fn differential_against_python3() {
    let seed = env_u64("SAGE_DIFF_SEED").unwrap_or(0x5A6E_0001_C0FF_EE00);
    let generated = env_u64("SAGE_DIFF_CASES").unwrap_or(3000);
    let generated = usize::try_from(generated).expect("SAGE_DIFF_CASES fits usize");

    // Generate every case first; python runs once for the whole batch.
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = value_strategy();
    let mut inputs: Vec<String> = Vec::new();
    let mut max_depth = 0;
    let mut deep = 0;
    let mut containers = 0;
    for _ in 0..generated {
        let value = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("generating a value: {e}"))
            .current();
        let depth = value.depth();
        max_depth = max_depth.max(depth);
        deep += usize::from(depth >= 5);
        containers += usize::from(depth > 0);
        let mut text = String::new();
        value.render(&mut text);
        inputs.push(text);
    }
    let random_doubles = env_u64("SAGE_DIFF_FLOATS").unwrap_or(12_000);
    let random_doubles = usize::try_from(random_doubles).expect("SAGE_DIFF_FLOATS fits usize");
    let sweep = float_sweep(seed, random_doubles);
    let sweep_len = sweep.len();
    inputs.extend(sweep);
    inputs.extend(EDGE_TEXTS.iter().map(|s| (*s).to_owned()));
    let vectors = load_vectors();
    let mut bodies = 0;
    for (kind, body_field, _) in VECTOR_KINDS {
        for entry in vectors[kind].as_array().into_iter().flatten() {
            if let Some(body) = entry[body_field].as_str() {
                inputs.push(body.to_owned());
                bodies += 1;
            }
        }
    }
    assert!(bodies >= 6, "only {bodies} vector bodies found");
    // What Python writes and reads but serde_json does not: only the
    // Python-compatible reader (`pyjson`) is checked on these.
    let serde_inputs = inputs.len();
    inputs.extend(
        [
            r#"[NaN, Infinity, -Infinity, {"x": NaN}]"#.to_owned(),
            r#"["\ud800", "\udfff\ud800", "\ud83d\ude00", {"\ud800": 1, "\ue000": 2, "\ud83d\ude00": 3}]"#.to_owned(),
            format!("{}1{}", "[".repeat(200), "]".repeat(200)),
            format!("{}null{}", "{\"a\": ".repeat(300), "}".repeat(300)),
            format!("[{}, -{}, 1{}.5e-3]", "9".repeat(4300), "1".repeat(4300), "0".repeat(400)),
            r#"{"n": 1e16, "m": 10000000000000001.0, "z": 1e-400, "big": 10000000000000000000000000000000000000000, "b": 1, "b": 2}"#.to_owned(),
        ],
    );

    let (expected, python_version) = python_batch(&inputs);

    let mut buf = String::new();
    let mut mismatches = 0usize;
    for (i, (input, want)) in inputs.iter().zip(&expected).enumerate() {
        let read = sage_types::pyjson::loads(input.as_bytes())
            .map(|v| v.canonical())
            .unwrap_or_else(|e| format!("RUST-PARSE-ERROR {e}"));
        if read != *want {
            mismatches += 1;
            if mismatches <= 25 {
                eprintln!("MISMATCH\n  input:    {input}\n  python:   {want}\n  pyjson:   {read}");
            }
        }
        if i >= serde_inputs {
            continue;
        }
        let got = match serde_json::from_str::<Value>(input) {
            Ok(value) => {
                buf.clear();
                write_python_json(&value, &mut buf);
                buf.as_str()
            }
            Err(e) => {
                buf = format!("RUST-PARSE-ERROR {e}");
                buf.as_str()
            }
        };
        if got != want {
            mismatches += 1;
            if mismatches <= 25 {
                eprintln!(
                    "MISMATCH\n  input:    {input}\n  python:   {want}\n  to_python_json: {got}"
                );
            }
        }
    }
    assert_eq!(
        mismatches,
        0,
        "{mismatches} of {} cases differ from {python_version} (seed {seed:#x})",
        inputs.len()
    );

    // The generator must really have produced what this test claims to cover.
    assert!(
        deep >= 30,
        "only {deep} generated values are 5+ levels deep"
    );
    assert!(
        containers * 2 >= generated,
        "only {containers} containers generated"
    );
    // Only the generated values count here (the fixed cases would hide a
    // generator that stopped producing something).
    let joined = expected[..generated].join("\n");
    for needle in [
        "\\ud83d",
        "\\udbff",
        "\\u007f",
        "\\u0000",
        "\\b",
        "\\f",
        "\\\"",
        "\\\\",
        "e-05",
        "e+16",
        "e-3",
        "e+30",
        "Infinity",
        "-Infinity",
        "-0.0",
        ".0,",
        "\\u00e9",
    ] {
        assert!(joined.contains(needle), "no case produced {needle:?}");
    }
    // A run of 40+ digits can only be an int (a float has at most 17
    // significant digits and 15 padding zeros).
    let longest_digit_run = joined
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest_digit_run >= 40, "no huge int generated");

    println!(
        "differential: {} cases, {} bytes ({generated} generated values, {containers} of them \
         containers, {deep} of depth 5..={max_depth}; {sweep_len} float texts; {} edge texts; \
         {bodies} vector bodies) identical to {python_version}, seed {seed:#x}",
        inputs.len(),
        inputs.iter().map(String::len).sum::<usize>(),
        EDGE_TEXTS.len()
    );
}
