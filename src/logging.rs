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
    let installed = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    if installed.is_ok() {
        std::panic::set_hook(Box::new(|info| {
            log_panic(&panic_message(info.payload()), info.location());
        }));
    }
}

/// A panic logged as an error event like any other, rather than by Rust's
/// default hook: that one prints plain text, which a collector reading the JSON
/// log cannot parse, and which journald records at the stream's info priority
/// (`journalctl -p err` would not show it). The backtrace, asked for with
/// `RUST_BACKTRACE=1`, is the event's `backtrace` field.
fn log_panic(message: &str, location: Option<&std::panic::Location<'_>>) {
    let location = location.map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
        .then(|| backtrace.to_string());
    let location = location.as_deref().unwrap_or("unknown");
    // Filtered out (`RUST_LOG=off`), it must still be seen.
    if !tracing::enabled!(tracing::Level::ERROR) {
        eprintln!("seatwarden panicked at {location} on thread {thread}: {message}");
        return;
    }
    tracing::error!(
        thread,
        location,
        backtrace,
        "panicked: {message} (a bug in seatwarden: please report it with this line)"
    );
}

/// The message a panic was given (`panic!`'s text, an index out of bounds),
/// from its payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|m| (*m).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A panic's message, where and on which thread, as one JSON log line at
    /// level ERROR: what a collector reading `--log-format json` can parse.
    #[test]
    fn a_panic_is_one_json_error_line_with_its_message_and_location() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let payload: Box<dyn std::any::Any + Send> = Box::new(String::from(
            "index out of bounds: the len is 0 but the index is 3",
        ));
        let here = std::panic::Location::caller();
        tracing::subscriber::with_default(subscriber, || {
            log_panic(&panic_message(payload.as_ref()), Some(here));
        });
        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 1, "{output}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["level"], "ERROR");
        let message = event["fields"]["message"].as_str().unwrap();
        assert!(
            message.contains("the len is 0 but the index is 3"),
            "{message}"
        );
        let location = event["fields"]["location"].as_str().unwrap();
        assert!(location.starts_with("src/logging.rs:"), "{location}");
        assert!(event["fields"]["thread"].is_string(), "{event}");
    }

    #[test]
    fn a_panic_message_is_read_from_either_kind_of_payload() {
        let text: Box<dyn std::any::Any + Send> = Box::new("static text");
        assert_eq!(panic_message(text.as_ref()), "static text");
        let formatted: Box<dyn std::any::Any + Send> = Box::new(format!("{} items", 3));
        assert_eq!(panic_message(formatted.as_ref()), "3 items");
        let other: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(other.as_ref()), "no message");
    }
}
