//! Writing to stdout. A closed stdout (`sage proofs list | head -1`) ends
//! the process quietly with status 141, as SIGPIPE ends Unix filters,
//! instead of the panic `println!` gives.

use std::fmt;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `out!` writes to stderr: stdout carries a stream's text alone.
static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// From now on, `out!` and `out_part!` write to stderr, so that stdout
/// holds only what [`piece`] writes (`delegate --stream`).
pub fn report_to_stderr() {
    TO_STDERR.store(true, Ordering::Relaxed);
}

/// Writes `args` and, if `newline`, a line end to stdout (stderr after
/// [`report_to_stderr`]).
pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    if TO_STDERR.load(Ordering::Relaxed) {
        let mut stderr = io::stderr().lock();
        let _ = stderr.write_fmt(args);
        if newline {
            let _ = stderr.write_all(b"\n");
        }
        return;
    }
    let mut stdout = io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| {
        if newline {
            stdout.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    finish(written);
}

/// Writes `text` to stdout as it is and flushes it: a piece of a stream,
/// shown as soon as it comes.
pub fn piece(text: &str) {
    let mut stdout = io::stdout().lock();
    finish(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    );
}

/// Ends the process on a failed write; see the module.
fn finish(written: io::Result<()>) {
    if let Err(error) = written {
        if error.kind() == io::ErrorKind::BrokenPipe {
            // What a shell reports for a process ended by SIGPIPE
            // (128 + 13), so `set -o pipefail` still sees a cut output.
            std::process::exit(141);
        }
        eprintln!("sage: cannot write to stdout: {error}");
        std::process::exit(1);
    }
}

/// `println!` for the command's output; see the module.
macro_rules! out {
    () => {
        $crate::output::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*), true)
    };
}

/// `print!` for the command's output; see the module.
macro_rules! out_part {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*), false)
    };
}

pub(crate) use {out, out_part};
