//! Writing to stdout. A closed stdout (`sage proofs list | head -1`) ends
//! the process quietly with status 141, as SIGPIPE ends Unix filters,
//! instead of the panic `println!` gives.

use std::fmt;
use std::io::{self, Write as _};

/// Writes `args` and, if `newline`, a line end to stdout.
pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    let mut stdout = io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| {
        if newline {
            stdout.write_all(b"\n")
        } else {
            Ok(())
        }
    });
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
