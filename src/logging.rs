//! Log output on stderr: text for a terminal, JSON for collectors, and under
//! systemd each line prefixed with its syslog priority (`<3>` for an error), which
//! journald strips and records as the line's priority. Without it every line,
//! an overdue deprovisioning's error included, reaches the journal at the stream's
//! default priority (info), and `journalctl -p err` or severity-based forwarding
//! never sees it.
//!
//! On a terminal, a log line written while a progress line is shown
//! ([`crate::run::ReadProgress`], the apply's) ends that line first, so that it
//! is not written on from the count and overwritten by the next one.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// Whether a progress line (`\r  reading workspace people: …`, `\r  applying: …`)
/// is on stderr without its line break: a log line written then would run on
/// from it, and the next page's `\r` would overwrite the log line's start.
static PROGRESS_LINE_OPEN: AtomicBool = AtomicBool::new(false);

/// Says that a progress line was just printed on stderr, its line not ended.
pub fn progress_line_printed() {
    PROGRESS_LINE_OPEN.store(true, Ordering::Relaxed);
}

/// Ends the progress line on stderr, if one is open and no log line ended it
/// already, so that what follows starts a line of its own.
pub fn end_progress_line() {
    if PROGRESS_LINE_OPEN.swap(false, Ordering::Relaxed) {
        eprintln!();
    }
}

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

/// Makes one writer per event: each event is written whole, in one write, so
/// lines never interleave; with `journal`, behind its priority prefix.
#[derive(Debug, Clone, Copy)]
pub struct Stderr {
    journal: bool,
}

impl Stderr {
    pub fn new(journal: bool) -> Stderr {
        Stderr { journal }
    }
}

/// One event's bytes, gathered until the formatter drops the writer and then
/// written to `sink` as one line ([`EventWriter::flush`]).
pub struct EventWriter<S: Write = std::io::Stderr> {
    prefix: Option<&'static [u8]>,
    buffer: Vec<u8>,
    sink: S,
}

impl<S: Write> EventWriter<S> {
    fn new(prefix: Option<&'static [u8]>, sink: S) -> Self {
        EventWriter {
            prefix,
            buffer: Vec::new(),
            sink,
        }
    }
}

impl<S: Write> Write for EventWriter<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            let line = one_line(&self.buffer);
            let line = match self.prefix {
                Some(prefix) => journal_entries(prefix, &line),
                None => line.into_owned(),
            };
            self.buffer.clear();
            // Progress is shown on a terminal only, never on a journal stream.
            if PROGRESS_LINE_OPEN.swap(false, Ordering::Relaxed) {
                self.sink.write_all(b"\n")?;
            }
            self.sink.write_all(&line)?;
        }
        self.sink.flush()
    }
}

/// The longest journal entry written, its prefix and newline aside: just
/// under journald's default `LineMax` (48K), so an event journald would keep
/// whole is written whole (a JSON line stays one entry a collector can parse).
const JOURNAL_ENTRY_MAX: usize = 48 * 1024 - 64;

/// `line` (one line, [`one_line`]) as journal entries, each behind `prefix`:
/// journald cuts a longer line into entries itself and reads the priority of
/// each piece from whatever text begins it, so the rest of a long error went
/// to the stream's default priority (info), or to one the text gave. Cut at
/// character boundaries, nothing left out.
fn journal_entries(prefix: &[u8], line: &[u8]) -> Vec<u8> {
    let mut body = line.strip_suffix(b"\n").unwrap_or(line);
    let mut entries = Vec::with_capacity(line.len() + prefix.len() + 1);
    loop {
        let mut cut = body.len().min(JOURNAL_ENTRY_MAX);
        // Back to the start of a UTF-8 character (at most three bytes back).
        while cut < body.len() && cut > 0 && body[cut] & 0xc0 == 0x80 {
            cut -= 1;
        }
        if cut == 0 {
            cut = body.len().min(JOURNAL_ENTRY_MAX);
        }
        let (entry, rest) = body.split_at(cut);
        entries.extend_from_slice(prefix);
        entries.extend_from_slice(entry);
        entries.push(b'\n');
        if rest.is_empty() {
            return entries;
        }
        body = rest;
    }
}

/// `event` as one line: each line break inside it (a CR, an LF, a vertical
/// tab, a NUL) written as its escape (`\n`), the newline ending it kept. Logged
/// values are often the directory's or the workspace's text (userNames, group
/// names, a provider's error message), and a line break in one would start a
/// line of its own: a forged entry in a text log, and under systemd one
/// journald records at whatever `<N>` priority the text after it gives
/// (journald ends an entry at a NUL as at a newline). The JSON format already
/// escapes them; tracing's text format escapes terminal escapes but not these.
fn one_line(event: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    if !body.iter().any(|b| matches!(b, b'\n' | b'\r' | 0x0b | 0)) {
        return std::borrow::Cow::Borrowed(event);
    }
    let mut line = Vec::with_capacity(event.len() + 8);
    for &byte in body {
        match byte {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            0x0b => line.extend_from_slice(b"\\x0b"),
            0 => line.extend_from_slice(b"\\0"),
            other => line.push(other),
        }
    }
    line.extend_from_slice(end);
    std::borrow::Cow::Owned(line)
}

/// The line a command's final error is written as on a journal stream (see
/// [`stderr_is_journal`]): `<3>error: ` and the error, as one line. The error
/// quotes providers' answers (a SCIM `detail`, an Okta or Graph message), and a
/// line break in one would start a journal entry of its own, at whatever `<N>`
/// priority the text after it gives, while the rest of the error would be
/// recorded at the stream's default priority (info), out of `journalctl -p err`.
pub fn error_for_journal(error: &str) -> Vec<u8> {
    let line = format!("error: {error}\n");
    journal_entries(b"<3>", &one_line(line.as_bytes()))
}

impl<S: Write> Drop for EventWriter<S> {
    fn drop(&mut self) {
        // The formatter writes an event and drops its writer: that is the end of
        // the line. A log line that cannot be written has nowhere to be reported.
        let _ = self.flush();
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter::new(None, std::io::stderr())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> EventWriter {
        EventWriter::new(
            self.journal.then(|| priority(*meta.level())),
            std::io::stderr(),
        )
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

    /// Makes [`EventWriter`]s as [`Stderr`] does under systemd, into `Captured`.
    #[derive(Clone, Default)]
    struct Journal(Captured);

    impl<'a> MakeWriter<'a> for Journal {
        type Writer = EventWriter<Captured>;

        fn make_writer(&'a self) -> Self::Writer {
            EventWriter::new(None, self.0.clone())
        }

        fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
            EventWriter::new(Some(priority(*meta.level())), self.0.clone())
        }
    }

    /// A userName, a group name or a provider's error message is the
    /// directory's or the workspace's text, and a person can often set their own
    /// name. A line break in one must not start a log line of its own: in a text
    /// log it would read as seatwarden's own (a forged "deactivated" or a hidden
    /// failure), and under systemd journald reads a `<3>` after it as that line's
    /// priority, so the forged line would even be recorded as an error.
    #[test]
    fn a_line_break_in_a_logged_value_cannot_forge_a_log_line() {
        let journal = Journal::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(journal.clone())
            .finish();
        let forged = "2026-12-06T03:00:00Z ERROR seatwarden: circuit breaker opened";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                subject = %format!("mallory@example.com\n<3>{forged}"),
                error = %format!("refused\r\n{forged}"),
                "action failed"
            );
            tracing::info!("job finished");
        });
        let output = String::from_utf8(journal.0.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 2, "{output}");
        assert!(lines[0].starts_with("<4>"), "{output}");
        assert!(
            lines[0].contains("mallory@example.com\\n<3>2026-12-06T03:00:00Z ERROR"),
            "{output}"
        );
        assert!(lines[0].contains("refused\\r\\n2026"), "{output}");
        assert!(lines[1].starts_with("<6>"), "{output}");
        assert!(!output.contains('\r'), "{output:?}");
    }

    /// journald ends a stream entry at a NUL byte as at a newline, and reads a
    /// `<N>` after it as the next entry's priority. A NUL in a SCIM userName
    /// (`"\u0000"` is valid JSON) or a provider's message, logged with `%`,
    /// reaches the writer as it is (tracing's text format escapes terminal
    /// escapes only), so it must be escaped there with the line breaks.
    #[test]
    fn a_nul_in_a_logged_value_cannot_forge_a_journal_entry() {
        let journal = Journal::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(journal.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                subject = %"mallory@example.com\0<3>circuit breaker opened",
                "account read"
            );
        });
        let output = journal.0.0.lock().unwrap().clone();
        assert!(
            !output.contains(&0),
            "{:?}",
            String::from_utf8_lossy(&output)
        );
        let output = String::from_utf8(output).unwrap();
        assert_eq!(output.lines().count(), 1, "{output}");
        assert!(
            output.contains("mallory@example.com\\0<3>circuit breaker opened"),
            "{output}"
        );
        let line = String::from_utf8(error_for_journal("refused\0<6>all fine")).unwrap();
        assert!(
            !line.contains('\0') && line.contains("refused\\0<6>"),
            "{line:?}"
        );
    }

    /// journald cuts a stream line longer than its `LineMax` (48K by default)
    /// into entries, and reads a `<N>` at the start of each piece as that
    /// entry's priority: the rest of a long error (a provider's body quoted in
    /// it, a long list of failing objects) was recorded at the stream's default
    /// priority (info), out of `journalctl -p err`, or at whatever priority
    /// text that happened to begin a piece gave. Such an event is written as
    /// several entries, each behind its own prefix, all of it kept.
    #[test]
    fn a_long_event_is_cut_into_journal_entries_each_at_its_priority() {
        let journal = Journal::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(journal.clone())
            .finish();
        let long = "x".repeat(60_000) + "<6>tail" + &"é".repeat(40_000);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(error = %long, "job failed");
        });
        let output = String::from_utf8(journal.0.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = output.lines().collect();
        assert!(lines.len() > 1, "{}", lines.len());
        for line in &lines {
            assert!(line.starts_with("<3>"), "{}", &line[..20]);
            assert!(line.len() < 48 * 1024, "{}", line.len());
        }
        let joined: String = lines.iter().map(|l| &l[3..]).collect();
        assert!(joined.contains(&long), "every byte of the event is kept");

        let error = format!("refused: {long}");
        let written = String::from_utf8(error_for_journal(&error)).unwrap();
        assert!(
            written
                .lines()
                .all(|l| l.starts_with("<3>") && l.len() < 48 * 1024),
            "{}",
            written.lines().count()
        );
    }

    /// A command's final error under systemd is one journal entry at error
    /// priority, whatever line breaks the provider's text it quotes holds.
    #[test]
    fn a_commands_error_is_one_journal_line_at_error_priority() {
        let error = "reading the workspace: 400 Bad Request: invalid filter\n\
                     <6>2026-12-06T03:00:00Z INFO seatwarden: job finished\r\nrest";
        let line = String::from_utf8(error_for_journal(error)).unwrap();
        assert_eq!(line.lines().count(), 1, "{line:?}");
        assert!(
            line.starts_with("<3>error: reading the workspace"),
            "{line:?}"
        );
        assert!(line.ends_with("\\r\\nrest\n"), "{line:?}");
        assert!(line.contains("invalid filter\\n<6>2026"), "{line:?}");
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
