//! A progress line on stderr, redrawn in place with `\r`, shown only when
//! stderr is a terminal: a pipe or a log file gets nothing extra.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a line is redrawn.
pub const REDRAW: Duration = Duration::from_millis(250);

/// One line of stderr that is redrawn in place. Clones draw the same line.
#[derive(Debug, Clone)]
pub struct Line {
    shown: bool,
    drawn: Arc<AtomicBool>,
}

impl Line {
    /// A line that draws only if `wanted` and stderr is a terminal.
    pub fn new(wanted: bool) -> Self {
        Line {
            shown: wanted && std::io::stderr().is_terminal(),
            drawn: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Replaces the line with `text`.
    pub fn draw(&self, text: &str) {
        if self.shown {
            // `\x1b[K` erases what a longer earlier text left.
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{text}\x1b[K");
            let _ = err.flush();
            self.drawn.store(true, Ordering::Relaxed);
        }
    }

    /// Erases the line, if anything was drawn, so that what is printed
    /// next starts on a clean line.
    pub fn clear(&self) {
        if self.shown && self.drawn.swap(false, Ordering::Relaxed) {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

/// "waiting for NAME… N s" on stderr while a guard lives, from its first
/// second on; erased when the guard is dropped (the answer came).
pub struct Waiting {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Waiting {
    /// Starts waiting for `name`; nothing is shown unless `wanted` and
    /// stderr is a terminal.
    pub fn start(name: &str, wanted: bool) -> Self {
        let line = Line::new(wanted);
        if !line.shown {
            return Waiting {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let name = name.to_owned();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            // Runs until the guard drops its sender.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REDRAW) {
                let waited = start.elapsed();
                if waited >= Duration::from_secs(1) {
                    line.draw(&format!("waiting for {name}… {} s", waited.as_secs()));
                }
            }
            line.clear();
        });
        Waiting {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
