//! Log output on stderr: text for a terminal, JSON for collectors, and under
//! systemd each line prefixed with its syslog priority (`<3>` for an error), which
//! journald strips and records as the line's priority. Without it every line,
//! an overdue deprovisioning's error included, reaches the journal at the stream's
//! default priority (info), and `journalctl -p err` or severity-based forwarding
//! never sees it.

use std::io::{IsTerminal, Write};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// The syslog priority journald reads from a `<N>` line prefix.
fn priority(level: Level) -> &'static [u8] {
    match level {
        Level::ERROR => b"<3>",
        Level::WARN => b"<4>",
        Level::INFO => b"<6>",
        Level::DEBUG | Level::TRACE => b"<7>",
    }
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM` names
/// its device and inode), and not, say, a pipe the service redirected it to.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == format!("{}:{}", stderr.dev(), stderr.ino())
}

/// Makes one writer per event: with `journal`, the event's bytes are written
/// behind its priority prefix, in one write so lines never interleave.
#[derive(Debug, Clone, Copy)]
pub struct Stderr {
    journal: bool,
}

impl Stderr {
    pub fn new(journal: bool) -> Stderr {
        Stderr { journal }
    }
}

pub struct EventWriter {
    prefix: Option<&'static [u8]>,
    buffer: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.prefix {
            Some(_) => {
                self.buffer.extend_from_slice(buf);
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(prefix) = self.prefix
            && !self.buffer.is_empty()
        {
            let mut line = Vec::with_capacity(prefix.len() + self.buffer.len());
            line.extend_from_slice(prefix);
            line.append(&mut self.buffer);
            std::io::stderr().write_all(&line)?;
        }
        std::io::stderr().flush()
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        // The formatter writes an event and drops its writer: that is the end of
        // the line. A log line that cannot be written has nowhere to be reported.
        let _ = self.flush();
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            prefix: None,
            buffer: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> EventWriter {
        EventWriter {
            prefix: self.journal.then(|| priority(*meta.level())),
            buffer: Vec::new(),
        }
    }
}

/// `--log-format`, `-v` and `RUST_LOG` applied; `quiet`: warnings and errors only
/// unless asked for more.
pub fn init(json: bool, verbose: u8, quiet: bool) {
    let default = match verbose {
        0 if quiet => "warn",
        0 => "warn,seatwarden=info",
        1 => "info,seatwarden=debug",
        _ => "debug,seatwarden=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr::new(stderr_is_journal()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
