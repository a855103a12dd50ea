//! Progress of long runs on stderr (never on stdout, which may carry JSON).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Prints how far a long run has come, at most once per interval, and only once the run has
/// taken long enough for a person to wonder.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    started: Instant,
    last: Instant,
    interval: Duration,
    interactive: bool,
    shown: bool,
}

impl Progress {
    /// Progress of `what` (e.g. "emulated"), starting now.
    pub fn new(what: &'static str) -> Self {
        let now = Instant::now();
        let interactive = std::io::stderr().is_terminal();
        Progress {
            what,
            started: now,
            last: now,
            interval: if interactive {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(5)
            },
            interactive,
            shown: false,
        }
    }

    /// Reports `done` of `total` seconds of work.
    pub fn update(&mut self, done: f64, total: f64) {
        let now = Instant::now();
        if now.duration_since(self.last) < self.interval
            || now.duration_since(self.started) < Duration::from_secs(1)
        {
            return;
        }
        self.last = now;
        self.shown = true;
        let percent = 100.0 * done / total;
        let line = format!(
            "{} {done:.3} of {total} s ({percent:.0} %), {:.1} s elapsed",
            self.what,
            now.duration_since(self.started).as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.interactive {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
    }

    /// Ends the progress line, if one was shown.
    pub fn finish(&self) {
        if self.shown && self.interactive {
            eprintln!();
        }
    }
}
