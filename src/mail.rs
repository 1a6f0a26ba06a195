//! SMTP delivery through the outbox (lettre, rustls with the ring provider).
//!
//! Nothing is sent straight from a caller: a message is queued in the store's
//! outbox first ([`queue`]), and [`deliver_due`] sends what is due, marking a row
//! `sent` only after the server accepted it. A transient failure (connection refused,
//! timeout, TLS handshake, 4xx) is retried with backoff inside the call (each retry
//! logged as a warning naming the server, the error, the wait and the attempt) and,
//! if still failing, rescheduled with a growing delay that survives restarts; a relay that
//! refuses the session (a 5xx to the greeting, the login or MAIL FROM; no STARTTLS)
//! is rescheduled the same way but not retried inside the call, the other due
//! messages put off with it (one login per backoff), and given up after
//! [`REFUSED_FOR_AT_MOST`]; a permanent refusal of the message (a 5xx to DATA, to
//! its content, or to every recipient) is kept as `failed` with the server's answer.
//! An error names the relay and the step it answered (`AUTH as "svc" failed:
//! permanent error (535): …`, `MAIL FROM <…>`, `RCPT TO <…>`, `DATA`), never the
//! password; a `smtp_url` whose TLS does not match the port (`smtps://` to 587,
//! `?tls=starttls` to 465) says which to write, and a greeting that never comes
//! is bounded on its own and not retried within the call. A whole session is
//! bounded by a few `timeout`s (its QUIT, once the
//! server has answered the message, by one of its own: a relay silent after
//! accepting cannot have the message sent again), and a message's send, retries
//! included, by the claim its sender holds on it (ten minutes to an hour, as
//! long as the attempts may take), so no other sender takes it meanwhile. Every
//! delivery call holds the database's sender lock (`<state.path>.sender`) shared;
//! one that finds no other sender alive (it takes the lock exclusively) makes
//! the messages dead senders claimed due at once (a `send-mail` killed by
//! SIGKILL held one for ten minutes or more). A crash between the
//! server's acceptance and the `sent` mark sends that one message again on restart
//! (at least once); its Message-ID is derived from the outbox row, so it is the same
//! message both times and mail clients show it once. A `sent` mark the database
//! refuses (a full disk) fails the call, saying the message went out, and the
//! process keeps it: its next call marks it before sending anything, so a
//! running daemon never sends it again once its claim runs out. An alert's reminders and its
//! resolution carry `In-Reply-To` and `References` with its first mail's
//! Message-ID ([`crate::alert`]), and go out after it: a message waits while an
//! older one of its thread is still pending, whatever their own backoffs say.
//! Once the relay takes a message again, the messages waiting for their next
//! attempt are due at once ([`Store::release_waiting`]) and go out in the same
//! call: after an outage the oldest alerts do not wait out an hour's backoff
//! each. `seatwarden send-mail` makes them due the same way before it sends, and
//! so does the daemon's mail job after a successful reload (SIGHUP), which it
//! runs at once: a fixed login is tried then, not once the refused one's backoff
//! has passed.
//!
//! The retry schedule across delivery calls: a message that failed waits 1, 2,
//! 4, … minutes, at most an hour ([`redelivery_delay`]), after each failed call,
//! the daemon's mail job calling each minute; but at most
//! [`UNREACHABLE_REDELIVERY_AT_MOST`] (5 minutes) after a failure that never got
//! an SMTP reply (connection refused, a name that does not resolve, a connect or
//! greeting timeout: [`MailError::relay_unreachable`], from the `Step` that
//! failed, not the error's words), since nothing else probes a relay that is
//! down and one or two queued alerts would otherwise wait up to an hour after
//! its return. A relay that answered (a 4xx such as greylisting, a 5xx, a
//! refused login, a certificate it showed) keeps the full backoff.
//!
//! `smtp_url` forms: `smtp://host[:port]` (plain, for a local relay; port 25),
//! `smtp://host[:port]?tls=starttls` (STARTTLS required; port 587),
//! `smtps://host[:port]` (implicit TLS; port 465). Credentials never go in the URL.
//! Plain `smtp://` to a relay that is not loopback is accepted with a warning
//! ([`crate::config::Config::warnings`]): the messages name leavers.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use secrecy::{ExposeSecret, SecretString};

use crate::retry::{self, RetryPolicy, Transient};
use crate::store::{
    NewMessage, OutboxEntry, OutboxId, OutboxKind, SenderLock, Senders, Store, StoreError,
};

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text: only for a relay on the same host or network.
    None,
    /// Plain connect, then STARTTLS, which is required (never falls back).
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
}

impl SmtpEndpoint {
    /// The answer to a `smtp_url` written without a scheme: the accepted forms,
    /// filled in with the host the reader wrote (without any port).
    fn no_scheme(text: &str) -> String {
        let written = text.trim().trim_start_matches('/');
        let host = match written.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => written,
        };
        format!(
            "not a URL: {text:?} has no scheme; write it in full, such as \
             \"smtps://{host}:465\" (TLS), \"smtp://{host}:587?tls=starttls\" or, to \
             a local relay, \"smtp://{host}:25\""
        )
    }

    /// Parses `smtp://`, `smtp://…?tls=starttls` and `smtps://` URLs.
    pub fn parse(text: &str) -> Result<SmtpEndpoint, String> {
        let url = url::Url::parse(text).map_err(|e| match e {
            // A host alone (`mail.example.com`), as mail clients take it.
            url::ParseError::RelativeUrlWithoutBase => Self::no_scheme(text),
            e => format!("not a URL: {e}"),
        })?;
        // `mail.example.com:587`, as mail clients take it, parses as scheme
        // `mail.example.com` with no host: "no host" would send the reader looking
        // in the wrong place, so say the scheme is missing.
        if url.host_str().is_none() && !matches!(url.scheme(), "smtp" | "smtps") {
            return Err(Self::no_scheme(text));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "credentials do not belong in the URL; set report.email.username and \
                 report.email.password_file"
                    .to_owned(),
            );
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "the URL has no host".to_owned())?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let mut starttls = false;
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("tls", "starttls") => starttls = true,
                ("tls", other) => {
                    return Err(format!("tls={other}: the only choice is tls=starttls"));
                }
                // Not the value: a credential may have been put there.
                (key, _) => {
                    return Err(format!(
                        "unknown URL parameter {key}; the only one is tls=starttls"
                    ));
                }
            }
        }
        let (tls, default_port) = match (url.scheme(), starttls) {
            ("smtp", false) => (TlsMode::None, 25),
            ("smtp", true) => (TlsMode::StartTls, 587),
            ("smtps", false) => (TlsMode::Implicit, 465),
            ("smtps", true) => {
                return Err("smtps:// is already TLS; tls=starttls is for smtp://".to_owned());
            }
            (other, _) => {
                return Err(format!(
                    "scheme {other}:// is not supported; use smtp://, smtp://…?tls=starttls or smtps://"
                ));
            }
        };
        Ok(SmtpEndpoint {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
        })
    }
}

/// Everything delivery needs, secrets resolved (see `Config::mail_settings`).
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub endpoint: SmtpEndpoint,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub from: String,
    pub to: Vec<String>,
    /// PEM of the only CA trusted for this server (a private relay), instead of the
    /// platform's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
    /// An alert condition is not re-sent within this period.
    pub quiet_period: Duration,
    /// A condition that comes and goes keeps its alert open until it has stayed
    /// clear this long; only then is its resolution sent
    /// ([`crate::alert::decide_resolve`]). Zero: at once.
    pub resolve_after: Duration,
    /// Retries inside one delivery call.
    pub retry: RetryPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid mail address {address:?}: {message}")]
    Address { address: String, message: String },
    #[error("building message {id}: {message}")]
    Build { id: OutboxId, message: String },
    #[error("setting up TLS for SMTP server {host}: {message}")]
    Tls { host: String, message: String },
    #[error("SMTP server {host}:{port}: {message}")]
    Smtp {
        host: String,
        port: u16,
        message: String,
        /// Worth another attempt within this delivery call.
        transient: bool,
        /// The relay refused the session, not the message (see [`relay_refused`]), or
        /// the TLS handshake with it failed.
        relay_refused: bool,
        /// No SMTP reply came at all: the connection was refused, the name did not
        /// resolve, connecting timed out or broke, or no greeting came in time. The
        /// relay is down or out of reach, not refusing us: its next attempt is
        /// [`UNREACHABLE_REDELIVERY_AT_MOST`] away at most ([`redelivery_delay_after`]).
        unreachable: bool,
    },
}

impl MailError {
    /// Whether the message stays queued for a later delivery call. A refused
    /// session does, though it is not retried at once: every message would fail
    /// the same way until the configuration is fixed, and the message must
    /// survive until then.
    pub fn keeps_message(&self) -> bool {
        self.is_transient()
            || matches!(
                self,
                MailError::Smtp {
                    relay_refused: true,
                    ..
                }
            )
    }
}

impl MailError {
    /// Whether the relay was never reached: no SMTP reply came (see
    /// [`MailError::Smtp`]'s `unreachable`).
    pub fn relay_unreachable(&self) -> bool {
        matches!(
            self,
            MailError::Smtp {
                unreachable: true,
                ..
            }
        )
    }
}

impl Transient for MailError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            MailError::Smtp {
                transient: true,
                ..
            }
        )
    }
}

fn mailbox(address: &str) -> Result<Mailbox, MailError> {
    address
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Address {
            address: address.to_owned(),
            message: e.to_string(),
        })
}

/// Checks an address the way delivery will parse it (configuration validation).
pub fn validate_address(address: &str) -> Result<(), String> {
    mailbox(address).map(|_| ()).map_err(|e| e.to_string())
}

/// Which step of the SMTP session a reply answered: it decides whether a 5xx is
/// about the relay or about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Greeting, EHLO, STARTTLS, AUTH, MAIL FROM: about the relay, our sender or
    /// our connection. Every message would meet the same answer, so none is given
    /// up for it.
    Session,
    /// RCPT when every recipient was refused (the recipients are the message's
    /// own, on its row), DATA and the message's final ".": the server refused
    /// this message.
    Content,
}

/// The SMTP step an error answered, named in its message (`AUTH as "svc" failed:
/// permanent error (535): …`): the relay's own words need not say what it
/// refused ("Username and Password not accepted", "Access denied"), and the
/// on-call engineer reading the alert log must know whether to fix the
/// password, the sender, a recipient or the message.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    /// TCP, the TLS handshake of `smtps://`, the greeting and EHLO.
    Connect,
    StartTls,
    /// Logging in as this user (never the password).
    Auth(&'a str),
    MailFrom(Option<&'a lettre::Address>),
    RcptTo(Option<&'a lettre::Address>),
    Data,
    /// The message itself, answered after its final ".".
    Message,
    Quit,
}

impl std::fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Connect => f.write_str("connecting"),
            Step::StartTls => f.write_str("STARTTLS"),
            Step::Auth(user) => write!(f, "AUTH as {user:?}"),
            Step::MailFrom(Some(from)) => write!(f, "MAIL FROM <{from}>"),
            Step::MailFrom(None) => f.write_str("MAIL FROM <>"),
            Step::RcptTo(Some(to)) => write!(f, "RCPT TO <{to}>"),
            Step::RcptTo(None) => f.write_str("RCPT TO"),
            Step::Data => f.write_str("DATA"),
            Step::Message => f.write_str("the message"),
            Step::Quit => f.write_str("QUIT"),
        }
    }
}

/// A connection factory for one SMTP server; cheap to keep for the process.
///
/// The session is driven command by command (lettre's `AsyncSmtpConnection`),
/// not through `AsyncSmtpTransport::send`: lettre's error carries the reply code
/// but not the command it answered, and a `550` to MAIL FROM (a relay that does
/// not accept our sender) must not fail a message the way a `554` to DATA does.
pub struct Mailer {
    host: String,
    port: u16,
    tls: TlsMode,
    tls_parameters: Option<TlsParameters>,
    credentials: Option<Credentials>,
    /// The login's user, named in an AUTH error.
    username: String,
    timeout: Duration,
    hello: ClientId,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

impl Mailer {
    pub fn new(settings: &MailSettings) -> Result<Mailer, MailError> {
        let endpoint = &settings.endpoint;
        let tls_error = |e: lettre::transport::smtp::Error| MailError::Tls {
            host: endpoint.host.clone(),
            message: e.to_string(),
        };
        let tls_parameters = match endpoint.tls {
            TlsMode::None => None,
            TlsMode::StartTls | TlsMode::Implicit => {
                let mut builder = TlsParameters::builder(endpoint.host.clone());
                if let Some(pem) = &settings.ca_pem {
                    builder = builder
                        .certificate_store(CertificateStore::None)
                        .add_root_certificate(Certificate::from_pem(pem).map_err(tls_error)?);
                }
                Some(builder.build_rustls().map_err(tls_error)?)
            }
        };
        let credentials = match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            )),
            _ => None,
        };
        Ok(Mailer {
            host: endpoint.host.clone(),
            port: endpoint.port,
            tls: endpoint.tls,
            tls_parameters,
            credentials,
            username: settings.username.clone().unwrap_or_default(),
            timeout: settings.timeout,
            hello: ClientId::default(),
        })
    }

    /// Sends one outbox message; `Ok` means the server accepted it. Recipients
    /// the server refused while it accepted others are returned (see
    /// [`Mailer::transact`]).
    pub async fn send(&self, entry: &OutboxEntry) -> Result<Sent, MailError> {
        let message = build_message(entry)?;
        let envelope = message.envelope().clone();
        let body = message.formatted();
        // lettre's timeout covers connecting; a relay that goes silent later
        // would hold the mail job (and a shutdown) for ever without this bound.
        let session = async {
            let mut conn = self.connect().await?;
            let outcome = self.transact(&mut conn, &envelope, &body).await;
            Ok::<_, MailError>((conn, outcome))
        };
        let limit = self.timeout.saturating_mul(SESSION_TIMEOUTS);
        let (mut conn, outcome) = match tokio::time::timeout(limit, session).await {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(MailError::Smtp {
                    host: self.host.clone(),
                    port: self.port,
                    message: format!("the SMTP session did not finish within {limit:?}"),
                    transient: true,
                    relay_refused: false,
                    unreachable: false,
                });
            }
        };
        // QUIT (unless the connection broke) and close, as lettre's transport does,
        // outside the session's bound and with one of its own: the outcome is
        // decided. A relay that accepted the message and then left QUIT
        // unanswered had the session time out, and the accepted message sent
        // again by every retry, never marked sent.
        let _ = tokio::time::timeout(self.timeout, conn.abort()).await;
        outcome
    }

    /// `check-config --connect`: connects, greets, upgrades to TLS and logs in as
    /// a delivery does ([`Mailer::connect`]), then QUIT: no MAIL FROM, no
    /// message. Bounded as a delivery's session is. What it proved.
    pub async fn probe(&self) -> Result<String, MailError> {
        let session = async {
            let mut conn = self.connect().await?;
            let quit = conn.quit().await;
            conn.abort().await;
            quit.map_err(|e| self.error(&e, Phase::Session, Step::Quit))?;
            let tls = match self.tls {
                TlsMode::None => "no TLS",
                TlsMode::StartTls => "STARTTLS",
                TlsMode::Implicit => "TLS",
            };
            let auth = match &self.credentials {
                Some(_) => ", AUTH accepted",
                None => ", no AUTH",
            };
            Ok(format!(
                "{}:{} connected, {tls}{auth}, QUIT",
                self.host, self.port
            ))
        };
        let limit = self.timeout.saturating_mul(SESSION_TIMEOUTS);
        match tokio::time::timeout(limit, session).await {
            Ok(outcome) => outcome,
            Err(_) => Err(MailError::Smtp {
                host: self.host.clone(),
                port: self.port,
                message: format!("the SMTP session did not finish within {limit:?}"),
                transient: true,
                relay_refused: false,
                unreachable: false,
            }),
        }
    }

    /// Connects, greets, upgrades to TLS and logs in, as lettre's transport does.
    /// An error names the step that failed ([`Step`]).
    async fn connect(&self) -> Result<AsyncSmtpConnection, MailError> {
        let wrapper = match self.tls {
            TlsMode::Implicit => self.tls_parameters.clone(),
            TlsMode::None | TlsMode::StartTls => None,
        };
        // lettre's timeout covers the TCP connect only. A port that expects TLS
        // from the first byte (465) asked in plain text waits for our TLS hello
        // as we wait for its greeting: bounded here, and said so, instead of the
        // whole session's bound spent once per retry ("did not finish").
        let greeting = self.timeout.saturating_mul(CONNECT_TIMEOUTS);
        let connecting = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            wrapper,
            None,
        );
        let mut conn = match tokio::time::timeout(greeting, connecting).await {
            Ok(connected) => {
                connected.map_err(|e| self.error(&e, Phase::Session, Step::Connect))?
            }
            Err(_) => {
                let hint = match self.tls {
                    TlsMode::None | TlsMode::StartTls => format!(
                        "; a port that expects TLS from the first byte (465) says nothing \
                         until the client starts TLS: smtps://{}:{}",
                        self.host, self.port
                    ),
                    TlsMode::Implicit => String::new(),
                };
                // Not retried within the call: it answers the same way at once.
                // Unreachable: nothing answered (a hung relay, a firewall, or that
                // port), and no login was tried, so trying again soon costs nothing.
                let mut error = self.client_error(&format!(
                    "{} failed: no SMTP greeting within {greeting:?}{hint}",
                    Step::Connect
                ));
                if let MailError::Smtp { unreachable, .. } = &mut error {
                    *unreachable = true;
                }
                return Err(error);
            }
        };
        if let (TlsMode::StartTls, Some(parameters)) = (self.tls, &self.tls_parameters) {
            // Required: fails (a client error) when the server does not offer it.
            conn.starttls(parameters.clone(), &self.hello)
                .await
                .map_err(|e| self.error(&e, Phase::Session, Step::StartTls))?;
        }
        if let Some(credentials) = &self.credentials {
            let step = Step::Auth(self.username.as_str());
            if conn
                .server_info()
                .get_auth_mechanism(DEFAULT_MECHANISMS)
                .is_none()
            {
                // lettre says "No compatible authentication mechanism was found".
                let hint = match self.tls {
                    TlsMode::None => format!(
                        "; relays often offer it only over TLS: smtp://{}:587?tls=starttls \
                         or smtps://{}:465",
                        self.host, self.host
                    ),
                    TlsMode::StartTls | TlsMode::Implicit => String::new(),
                };
                return Err(self.client_error(&format!(
                    "{step} failed: the server offers no login seatwarden can use (AUTH PLAIN \
                     or LOGIN){hint}"
                )));
            }
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(|e| self.error(&e, Phase::Session, step))?;
        }
        Ok(conn)
    }

    /// MAIL FROM, RCPT TO each recipient, DATA, the message. A recipient refused
    /// while others are accepted does not hold the message back: the others get
    /// it (an alert reaches whoever can receive it) and the refused ones are
    /// returned to be recorded and logged. Keeping it instead would stop the whole
    /// outbox on one mistyped or departed address, since every message goes to the
    /// same recipients; when every recipient is refused, nobody gets it, and the
    /// message fails for good (its recipients are its own, on its row: kept, it
    /// would stand first in the queue for ever).
    async fn transact(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &lettre::address::Envelope,
        body: &[u8],
    ) -> Result<Sent, MailError> {
        let mail_from = |e: lettre::transport::smtp::Error| {
            self.error(&e, Phase::Session, Step::MailFrom(envelope.from()))
        };
        let mut options = Vec::new();
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(self.client_error(
                    "an address is not ASCII and the server does not support SMTPUTF8",
                ));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !body.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(self.client_error(
                    "the message is not ASCII and the server does not support 8BITMIME",
                ));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(Mail::new(envelope.from().cloned(), options))
            .await
            .map_err(mail_from)?;
        let mut refused = Vec::new();
        let mut last_refusal = None;
        for to in envelope.to() {
            match conn.command(Rcpt::new(to.clone(), Vec::new())).await {
                Ok(_) => {}
                // A final answer about this recipient. A temporary one (greylisting,
                // 452 too many recipients) keeps the whole message for later, as
                // anything else (the connection dropped, a reply that does not
                // parse) does.
                Err(e) if e.is_permanent() => {
                    refused.push(format!("{to}: {e}"));
                    last_refusal = Some(e);
                }
                Err(e) => return Err(self.error(&e, Phase::Session, Step::RcptTo(Some(to)))),
            }
        }
        if let Some(e) = last_refusal
            && refused.len() == envelope.to().len()
        {
            // The recipients are the message's own (stored on its row): refused
            // for good, it would stand first in the queue for ever.
            let mut error = self.error(&e, Phase::Content, Step::RcptTo(None));
            if let MailError::Smtp { message, .. } = &mut error {
                *message = format!("every recipient was refused: {}", refused.join("; "));
            }
            return Err(error);
        }
        conn.command(Data)
            .await
            .map_err(|e| self.error(&e, Phase::Content, Step::Data))?;
        conn.message(body)
            .await
            .map_err(|e| self.error(&e, Phase::Content, Step::Message))?;
        Ok(Sent { refused })
    }

    fn client_error(&self, message: &str) -> MailError {
        MailError::Smtp {
            host: self.host.clone(),
            port: self.port,
            message: message.to_owned(),
            transient: false,
            relay_refused: true,
            unreachable: false,
        }
    }

    /// What to change when the error shows a mismatched `smtp_url`: the server
    /// answered our TLS hello (`smtps://`) in plain text.
    fn hint(&self, e: &lettre::transport::smtp::Error) -> String {
        if self.tls == TlsMode::Implicit
            && crate::http::tls_error(e).is_some_and(crate::http::not_tls)
        {
            format!(
                "; the server on that port does not speak TLS: a port that starts TLS on \
                 request, such as 587, wants smtp://{}:{}?tls=starttls",
                self.host, self.port
            )
        } else {
            String::new()
        }
    }

    fn error(&self, e: &lettre::transport::smtp::Error, phase: Phase, step: Step<'_>) -> MailError {
        // A certificate this host does not trust, or a handshake the two
        // sides cannot agree on, fails the same way at once: kept for a
        // later call (a renewed certificate, a fixed CA file), not retried.
        let tls_failed =
            e.is_tls() || crate::http::tls_error(e).is_some_and(crate::http::tls_fails_for_good);
        MailError::Smtp {
            host: self.host.clone(),
            port: self.port,
            // A 5xx will be answered the same way again; anything else (refused
            // connection, timeout, 4xx) may pass later.
            transient: !(e.is_permanent() || e.is_client() || tls_failed),
            // A relay that refuses us rather than the message (a rotated
            // password, a lost STARTTLS, a sender it does not relay for) is not
            // asked again at once: another login with the same password fails
            // too, and a few in a row can lock the relay account.
            relay_refused: relay_refused(e, phase) || tls_failed,
            // Connecting got no SMTP answer (no reply code, nothing that failed
            // to parse as one, no TLS handshake that failed for good): refused,
            // not resolved, timed out or reset. A certificate or a port that
            // speaks plain text did answer, and waits for a fix like a refusal.
            unreachable: matches!(step, Step::Connect)
                && e.status().is_none()
                && !e.is_response()
                && !e.is_client()
                && !tls_failed,
            message: format!("{step} failed: {e}{}", self.hint(e)),
        }
    }
}

/// What the server accepted: the message, for every recipient but `refused`
/// (each with the server's answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    pub refused: Vec<String>,
}

/// Whether the relay refused the session rather than the message: a failure on
/// our side of the protocol (no STARTTLS offered, no usable authentication
/// mechanism) or a 5xx to the session (a greeting refusing our address, 530
/// authentication required, 535 credentials invalid, 550 relaying denied or 553
/// sender not allowed at MAIL FROM). Every message would fail the same way until
/// the configuration is fixed. A 5xx to every recipient, to DATA or to the message
/// itself refuses that message.
fn relay_refused(error: &lettre::transport::smtp::Error, phase: Phase) -> bool {
    error.is_client() || (error.is_permanent() && phase == Phase::Session)
}

/// The message as sent: multipart/alternative (text, then HTML), with a
/// Message-ID and Date fixed by the outbox row, so a resend is the same message,
/// and, for an alert's reminder or resolution, `In-Reply-To` and `References`
/// naming the alert's first mail, so clients thread them.
pub fn build_message(entry: &OutboxEntry) -> Result<Message, MailError> {
    let message = &entry.message;
    let mut builder = Message::builder()
        .from(mailbox(&message.from)?)
        .subject(message.subject.clone())
        .message_id(Some(entry.message_id()))
        .date(SystemTime::from(entry.created_at));
    if let Some(root) = &message.in_reply_to {
        builder = builder.in_reply_to(root.clone()).references(root.clone());
    }
    for to in &message.to {
        builder = builder.to(mailbox(to)?);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            message.text.clone(),
            message.html.clone(),
        ))
        .map_err(|e| MailError::Build {
            id: entry.id,
            message: e.to_string(),
        })
}

/// Queues a message from the configured sender to the configured recipients.
pub fn queue(
    store: &mut Store,
    settings: &MailSettings,
    kind: OutboxKind,
    subject: &str,
    text: &str,
    html: &str,
    now: DateTime<Utc>,
) -> Result<OutboxId, StoreError> {
    store.enqueue_message(&compose(settings, kind, subject, text, html), now)
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Render(#[from] crate::report::RenderError),
}

/// Queues a drift report (text and HTML, subject with its state), times in `tz`
/// and commands run as `admin_command`; each list shows its first
/// [`crate::report::digest::LISTED`] and names the command that prints the rest.
pub fn queue_report(
    store: &mut Store,
    settings: &MailSettings,
    name: &str,
    report: &crate::report::Report,
    tz: chrono_tz::Tz,
    admin_command: &str,
    now: DateTime<Utc>,
) -> Result<OutboxId, QueueError> {
    // Each list capped as the digest's are, saying which command prints the rest:
    // a first run's report lists every account, megabytes no mail relay takes.
    let html = crate::report::render_html_for_email(report, tz, admin_command)?;
    let text = crate::report::render_text_for_email(report, tz, admin_command);
    let subject = crate::report::subject(name, report);
    Ok(queue(
        store,
        settings,
        OutboxKind::Report,
        &subject,
        &text,
        &html,
        now,
    )?)
}

/// Queues a digest (text and HTML, subject with its state).
pub fn queue_digest(
    store: &mut Store,
    settings: &MailSettings,
    digest: &crate::report::digest::Digest,
    now: DateTime<Utc>,
) -> Result<OutboxId, QueueError> {
    let message = digest_message(settings, digest)?;
    Ok(store.enqueue_message(&message, now)?)
}

/// Queues a digest and sets `state`'s keys to their values in the store's
/// `daemon_state` in the same transaction (the daemon's digest job: the period it
/// covers is recorded exactly when its digest is queued).
pub fn queue_digest_setting_state(
    store: &mut Store,
    settings: &MailSettings,
    digest: &crate::report::digest::Digest,
    now: DateTime<Utc>,
    state: &[(&str, &str)],
) -> Result<OutboxId, QueueError> {
    let message = digest_message(settings, digest)?;
    Ok(store.enqueue_message_setting_state(&message, now, state)?)
}

fn digest_message(
    settings: &MailSettings,
    digest: &crate::report::digest::Digest,
) -> Result<NewMessage, QueueError> {
    let html = digest.render_html()?;
    Ok(compose(
        settings,
        OutboxKind::Digest,
        &digest.subject,
        &crate::report::printable(&digest.render_text(), true),
        &html,
    ))
}

/// The outbox row for a message from the configured sender to the recipients.
pub fn compose(
    settings: &MailSettings,
    kind: OutboxKind,
    subject: &str,
    text: &str,
    html: &str,
) -> NewMessage {
    NewMessage {
        kind,
        subject: subject.to_owned(),
        from: settings.from.clone(),
        to: settings.to.clone(),
        text: text.to_owned(),
        html: html.to_owned(),
        in_reply_to: None,
    }
}

/// What one [`deliver_due`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub sent: usize,
    /// Still failing transiently, or the relay refused the session; rescheduled.
    pub retrying: usize,
    /// Refused for good; kept as `failed`.
    pub failed: usize,
    /// The last error seen, for the caller's log or exit status.
    pub last_error: Option<String>,
}

/// How long a message waits before its next delivery call after `attempts` failed
/// ones: 1 min, 2, 4, … capped at 1 h.
pub fn redelivery_delay(attempts: u32) -> Duration {
    let minutes = 1u64 << attempts.min(6);
    Duration::from_secs((minutes * 60).min(3600))
}

/// The longest a message waits for its next delivery call after a failure that
/// never reached the relay ([`MailError::relay_unreachable`]): 5 minutes.
///
/// Nothing else probes a relay that is down: with one or two messages queued,
/// the next attempt is theirs, and at an hour's backoff an overdue-deprovision
/// alert sat up to an hour after the relay came back (against a 1 h
/// `deprovision.sla`). Five minutes is the sweep's default interval, so an alert
/// goes out at most one sweep after the relay's return. Such a probe is one TCP
/// connection (and a TLS handshake for `smtps://`) and no login: no lockout, no
/// rate limit on the relay's side, and the mail job, stopping at the first
/// failure, makes one such attempt a minute at most, however many messages wait.
/// A relay that answered (4xx greylisting, 5xx, a refused login) keeps the full
/// backoff: asking it again sooner is what its answer asks not to do.
pub const UNREACHABLE_REDELIVERY_AT_MOST: Duration = Duration::from_secs(5 * 60);

/// How long a message waits before its next delivery call after `error`, its
/// `attempts`-th failure: [`redelivery_delay`], at most
/// [`UNREACHABLE_REDELIVERY_AT_MOST`] when the relay was never reached (1 min,
/// 2, 4, 5, 5, …).
pub fn redelivery_delay_after(error: &MailError, attempts: u32) -> Duration {
    let delay = redelivery_delay(attempts);
    if error.relay_unreachable() {
        delay.min(UNREACHABLE_REDELIVERY_AT_MOST)
    } else {
        delay
    }
}

/// The shortest a sender holds a message it is sending (see [`Store::claim_message`]).
const CLAIM_AT_LEAST: Duration = Duration::from_secs(10 * 60);

/// The longest: within `store::outbox::LONGEST_WAIT`, so that a claim never reads
/// as an attempt scheduled by a clock since stepped back (due at once).
const CLAIM_AT_MOST: Duration = Duration::from_secs(60 * 60);

/// A claim outlasts the send it covers by this much: the row is marked after it.
const CLAIM_MARGIN: Duration = Duration::from_secs(60);

/// How long a sender holds a message, and how long sending it, retries included,
/// may take (the claim less [`CLAIM_MARGIN`]): every attempt's session bound
/// ([`SESSION_TIMEOUTS`] × `timeout`, and one more for its QUIT) and the waits between attempts, within
/// [`CLAIM_AT_LEAST`] and [`CLAIM_AT_MOST`]. A fixed ten minutes let a send with
/// a `timeout` over about 37 s outlast its claim against a relay gone silent:
/// another sender (`send-mail` from a shell, a job's delivery while the daemon
/// stops) then took the message, and both sent it.
fn claim_for(timeout: Duration, policy: RetryPolicy) -> (Duration, Duration) {
    let attempts = u32::try_from(policy.max_retries.saturating_add(1)).unwrap_or(u32::MAX);
    let retries = u32::try_from(policy.max_retries).unwrap_or(u32::MAX);
    // The backoff with its jitter, or a server's `Retry-After` at its cap.
    let waits = policy
        .longest_backoff()
        .max(policy.max_retry_after.saturating_mul(retries));
    // Each attempt's session, and its QUIT, bounded apart (`Mailer::send`).
    let send = timeout
        .saturating_mul(SESSION_TIMEOUTS + 1)
        .saturating_mul(attempts)
        .saturating_add(waits);
    let claim = send
        .saturating_add(CLAIM_MARGIN)
        .clamp(CLAIM_AT_LEAST, CLAIM_AT_MOST);
    (claim, claim.saturating_sub(CLAIM_MARGIN))
}

/// Connecting, the TLS handshake of `smtps://`, the greeting and EHLO may take
/// this many `timeout`s ([`Mailer::connect`]).
const CONNECT_TIMEOUTS: u32 = 2;

/// One SMTP session may take this many `timeout`s (connect, greeting, login,
/// envelope, message) before it is abandoned as a silent relay; its QUIT, after
/// the outcome is known, one more.
const SESSION_TIMEOUTS: u32 = 4;

/// A message the relay keeps refusing (our sender, our login) is given up after
/// this long (a relay that never answered, one that takes connections and never
/// greets, refused nothing, and its messages wait for it): it carries the sender of when it was queued, so a corrected
/// configuration would not heal it, and it would stand first in the queue for
/// ever, in front of every later alert.
pub const REFUSED_FOR_AT_MOST: chrono::Duration = chrono::Duration::days(3);

/// `SMTP server smtp.example.com:587: connection refused; retrying in 2 s
/// (attempt 2 of 4)`: what failed, how long the wait is, and which attempt comes.
pub fn retry_notice(error: &MailError, delay: Duration, next: usize, attempts: usize) -> String {
    let wait = if delay < Duration::from_secs(10) {
        format!("{:.1} s", delay.as_secs_f64())
    } else {
        format!("{} s", delay.as_secs())
    };
    format!("{error}; retrying in {wait} (attempt {next} of {attempts})")
}

/// A message the relay took whose `sent` mark the database refused (a full disk,
/// a lock held past the busy timeout): its database file, its id, when it was
/// sent, and the note its mark carries.
type Unmarked = (std::path::PathBuf, OutboxId, DateTime<Utc>, Option<String>);

/// The messages this process sent and could not mark `sent`. Their rows stay
/// pending, claimed for a while, and once the claim ran out the next delivery
/// sent them again: an alert paged its people twice. Each is marked before the
/// next call sends anything. Only a file database's: an in-memory one is gone
/// with its store.
static SENT_UNMARKED: std::sync::Mutex<Vec<Unmarked>> = std::sync::Mutex::new(Vec::new());

/// The sender locks this process keeps beyond its delivery call, by database:
/// while a message it sent is not marked ([`SENT_UNMARKED`]) its claim is live,
/// and no other sender may take that claim for a dead one's.
static KEPT_SENDER_LOCKS: std::sync::Mutex<Vec<(std::path::PathBuf, SenderLock)>> =
    std::sync::Mutex::new(Vec::new());

/// A delivery call's hold on its database's sender lock ([`SenderLock`]).
struct SenderGuard {
    database: std::path::PathBuf,
    lock: Option<SenderLock>,
}

impl SenderGuard {
    /// Takes the sender lock of `store`'s database (none for an in-memory one,
    /// which no other process sees). Alone, with no other sender alive, it makes
    /// the messages dead senders had claimed due now (a `send-mail` killed by
    /// SIGKILL held its message for ten minutes or more), then shares the lock.
    /// One kept since an unmarked send is kept as it is: its claims stand.
    async fn take(
        store: &mut Store,
        now: DateTime<Utc>,
    ) -> Result<Option<SenderGuard>, StoreError> {
        let Some(database) = store.path().map(std::path::Path::to_path_buf) else {
            return Ok(None);
        };
        let kept = KEPT_SENDER_LOCKS.lock().ok().and_then(|mut kept| {
            let at = kept.iter().position(|(of, _)| *of == database)?;
            Some(kept.swap_remove(at).1)
        });
        let lock = match kept {
            Some(lock) => lock,
            None => match SenderLock::take(&database).await? {
                Senders::Alone(lock) => {
                    let released = store.release_dead_claims(now)?;
                    if released > 0 {
                        tracing::info!(
                            messages = released,
                            "messages claimed by a sender no longer running (killed, or its \
                             host restarted) are due now"
                        );
                    }
                    lock.share()?
                }
                Senders::Others(lock) => lock,
            },
        };
        Ok(Some(SenderGuard {
            database,
            lock: Some(lock),
        }))
    }
}

impl Drop for SenderGuard {
    /// Kept while a message this process sent is unmarked: let go, another
    /// sender alone would release its claim and send it again.
    fn drop(&mut self) {
        let unmarked = SENT_UNMARKED
            .lock()
            .is_ok_and(|unmarked| unmarked.iter().any(|(of, ..)| *of == self.database));
        if unmarked
            && let Some(lock) = self.lock.take()
            && let Ok(mut kept) = KEPT_SENDER_LOCKS.lock()
        {
            kept.push((self.database.clone(), lock));
        }
    }
}

/// Marks `id` sent at `at`; when the database refuses, keeps it in
/// [`SENT_UNMARKED`] and says in the error that the message went out.
fn mark_sent(
    store: &mut Store,
    id: OutboxId,
    at: DateTime<Utc>,
    note: Option<&str>,
) -> Result<(), StoreError> {
    let Err(error) = store.mark_message_sent_noting(id, at, note) else {
        return Ok(());
    };
    let kept = match (store.path(), SENT_UNMARKED.lock()) {
        (Some(path), Ok(mut unmarked)) => {
            unmarked.push((path.to_owned(), id, at, note.map(str::to_owned)));
            true
        }
        _ => false,
    };
    let next = if kept {
        "this process marks it before its next delivery and does not send it again \
         (`send-mail`, which ends here, cannot: the next sender to find no other running \
         sends it again, with the same Message-ID)"
    } else {
        // No sender lock kept for it (none at all for a database in memory).
        "it will be sent again, with the same Message-ID: by the next sender to find no \
         other running, else once its claim runs out"
    };
    Err(StoreError::NotMarked {
        id,
        next,
        source: Box::new(error),
    })
}

/// Marks `sent` the messages of `store`'s database this process sent and could
/// not mark ([`SENT_UNMARKED`]); the first refusal is returned, and nothing is
/// to be sent while the database still refuses them.
fn mark_unmarked(store: &mut Store) -> Result<(), StoreError> {
    let Some(path) = store.path().map(std::path::Path::to_path_buf) else {
        return Ok(());
    };
    let Ok(mut unmarked) = SENT_UNMARKED.lock() else {
        return Ok(());
    };
    let mut first_error = None;
    unmarked.retain(|(of, id, at, note)| {
        if *of != path || first_error.is_some() {
            return true;
        }
        match store.mark_message_sent_noting(*id, *at, note.as_deref()) {
            Ok(()) => {
                tracing::info!(
                    outbox_id = id,
                    "the message sent earlier is marked sent now"
                );
                false
            }
            Err(error) => {
                first_error = Some(StoreError::NotMarked {
                    id: *id,
                    next: "nothing more is sent until it can be marked",
                    source: Box::new(error),
                });
                true
            }
        }
    });
    first_error.map_or(Ok(()), Err)
}

/// Sends every message due at `now`, oldest first, until one fails and is kept for
/// a later call (the others stay due): a transient failure, or a relay that
/// refuses the session (login, sender; see [`relay_refused`]). Only a message the
/// server refused itself (a 5xx to every recipient, to DATA or to its content) is
/// failed for good, and the next one is tried. Store errors stop the call; delivery errors are recorded
/// on their rows. The first message the relay takes makes those waiting for their next
/// attempt due ([`Store::release_waiting`]); at most [`DUE_PER_CALL`] are taken a call.
/// A relay that refuses the session puts off every due message with the one it
/// refused ([`Store::defer_due`]): one login per backoff, not one a minute.
pub async fn deliver_due(
    store: &mut Store,
    mailer: &Mailer,
    policy: RetryPolicy,
    now: DateTime<Utc>,
) -> Result<Delivery, StoreError> {
    let mut delivery = Delivery::default();
    mark_unmarked(store)?;
    // Held to the end of the call (longer while a message it sent is unmarked).
    let _sending = SenderGuard::take(store, now).await?;
    let (claim, budget) = claim_for(mailer.timeout, policy);
    let claim = chrono::Duration::from_std(claim).unwrap_or(chrono::Duration::minutes(10));
    // `now` moved on by the time spent sending: a hundred slow sends outlast one
    // claim, and a claim made at the call's `now` would be stale when taken.
    let started = std::time::Instant::now();
    let at = || now + chrono::Duration::from_std(started.elapsed()).unwrap_or(claim);
    // Each message's backoff is its own: after an outage of the relay a
    // resolution queued late can be due before the alert it resolves, which
    // failed more often. Mail threads go out in order, or people would read
    // "Resolved" first and then an alert that is no longer true as news.
    let mut unsent = store.pending_threads()?;
    // Each message's backoff is its own too: after an outage, the oldest alerts
    // wait out an hour each, and their threads' resolutions behind them. Once
    // the relay took one message it is back, and the messages waiting for their
    // next attempt are due at once (once per call; then read again, oldest
    // first, within the call's bound).
    let mut released = false;
    let mut left = DUE_PER_CALL;
    'reread: loop {
        for entry in store.due_messages(now, left)? {
            left = left.saturating_sub(1);
            let thread = entry.thread();
            if unsent
                .iter()
                .any(|(id, other)| *id < entry.id && *other == thread)
            {
                // Stays due: it goes in the call that sends the older one.
                continue;
            }
            let claimed_at = at();
            // Longer than a send with all its retries may take (`budget`).
            if !store.claim_message(entry.id, claimed_at, claimed_at + claim)? {
                continue;
            }
            let mut failed_attempts = 0;
            let sending = retry::retry(
                policy,
                || mailer.send(&entry),
                |error, delay| {
                    failed_attempts += 1;
                    // A warning, not info: `send-mail` run by hand would otherwise sit
                    // silent through the backoff, and look hung.
                    tracing::warn!(
                        outbox_id = entry.id,
                        "{}",
                        retry_notice(error, delay, failed_attempts + 1, policy.max_retries + 1)
                    );
                },
            );
            // Never past the claim: another sender may take the message then.
            let outcome = match tokio::time::timeout(budget, sending).await {
                Ok(outcome) => outcome,
                Err(_) => Err(MailError::Smtp {
                    host: mailer.host.clone(),
                    port: mailer.port,
                    message: format!(
                        "sending did not finish within {budget:?}, the time the message was \
                     claimed for"
                    ),
                    transient: true,
                    relay_refused: false,
                    unreachable: false,
                }),
            };
            match outcome {
                Ok(sent) if sent.refused.is_empty() => {
                    mark_sent(store, entry.id, at(), None)?;
                    unsent.retain(|(id, _)| *id != entry.id);
                    delivery.sent += 1;
                    if release_after_success(store, &mut released, now)? {
                        continue 'reread;
                    }
                }
                Ok(sent) => {
                    // Sent to the others; the refused recipients are on the row and
                    // in the call's error, as a failed delivery's answer is.
                    let text = format!(
                        "sent, but the server refused some recipients: {}",
                        sent.refused.join("; ")
                    );
                    tracing::warn!(outbox_id = entry.id, error = %text, "SMTP server refused recipients");
                    mark_sent(store, entry.id, at(), Some(&text))?;
                    unsent.retain(|(id, _)| *id != entry.id);
                    delivery.sent += 1;
                    delivery.last_error = Some(text);
                    if release_after_success(store, &mut released, now)? {
                        continue 'reread;
                    }
                }
                Err(error) => {
                    // A relay never reached refused nothing: its message waits for
                    // it however long it is down, as one refusing connections does.
                    let refused_too_long = !error.is_transient()
                        && !error.relay_unreachable()
                        && now.signed_duration_since(entry.created_at) > REFUSED_FOR_AT_MOST;
                    let text = if refused_too_long {
                        format!(
                            "given up after {} days of refusals: {error}",
                            REFUSED_FOR_AT_MOST.num_days()
                        )
                    } else {
                        error.to_string()
                    };
                    let retry_at = (error.keeps_message() && !refused_too_long).then(|| {
                        now + chrono::Duration::from_std(redelivery_delay_after(
                            &error,
                            entry.attempts,
                        ))
                        .unwrap_or_else(|_| chrono::Duration::hours(1))
                    });
                    tracing::warn!(outbox_id = entry.id, error = %text, retry_at = ?retry_at, "SMTP delivery failed");
                    store.mark_message_attempt_failed(entry.id, &text, retry_at)?;
                    delivery.last_error = Some(text);
                    if let Some(until) = retry_at.filter(|_| !error.is_transient()) {
                        // The relay refuses us (a bad login, our sender): the others
                        // wait with this one, a backoff for the relay, rather than a
                        // refused login each minute that can lock the account. A
                        // relay that cannot be reached is still tried each minute with
                        // the next due message, and the one that met it waits
                        // `UNREACHABLE_REDELIVERY_AT_MOST` at most (a silent relay's
                        // others with it), so its return is seen within minutes even
                        // with one message queued.
                        store.defer_due(now, until)?;
                    }
                    if retry_at.is_some() {
                        delivery.retrying += 1;
                        // The server is unreachable, busy or refuses us: the rest would
                        // fail the same way one after another (another login each). They
                        // stay due for the next call.
                        return Ok(delivery);
                    }
                    unsent.retain(|(id, _)| *id != entry.id);
                    delivery.failed += 1;
                }
            }
        }
        return Ok(delivery);
    }
}

/// How many due messages one [`deliver_due`] call takes at most.
const DUE_PER_CALL: usize = 100;

/// After a message went out: the first time in a call, makes the messages
/// waiting for their next attempt due at `now` ([`Store::release_waiting`]) and
/// says whether any were, so the call reads what is due again.
fn release_after_success(
    store: &mut Store,
    released: &mut bool,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    if std::mem::replace(released, true) {
        return Ok(false);
    }
    let waiting = store.release_waiting(now)?;
    if waiting > 0 {
        tracing::info!(
            messages = waiting,
            "the SMTP server took a message again: the messages waiting for their next \
             attempt are due now"
        );
    }
    Ok(waiting > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn smtp_urls() {
        let plain = SmtpEndpoint::parse("smtp://127.0.0.1").unwrap();
        assert_eq!((plain.port, plain.tls), (25, TlsMode::None));
        let starttls = SmtpEndpoint::parse("smtp://mail.example.com?tls=starttls").unwrap();
        assert_eq!((starttls.port, starttls.tls), (587, TlsMode::StartTls));
        let implicit = SmtpEndpoint::parse("smtps://mail.example.com:2465").unwrap();
        assert_eq!(
            (implicit.host.as_str(), implicit.port, implicit.tls),
            ("mail.example.com", 2465, TlsMode::Implicit)
        );
    }

    #[test]
    fn smtp_url_host_and_port_without_scheme_asks_for_a_scheme() {
        let error = SmtpEndpoint::parse("smtp.example.com:587").unwrap_err();
        assert!(error.contains("has no scheme"), "{error}");
        assert!(
            error.contains("\"smtp://smtp.example.com:587?tls=starttls\"")
                && error.contains("\"smtps://smtp.example.com:465\""),
            "{error}"
        );
        assert!(!error.contains("no host"), "{error}");
    }

    #[test]
    fn smtp_urls_refuse_credentials_and_unknown_options() {
        let with_password = SmtpEndpoint::parse("smtp://u:hunter2@host").unwrap_err();
        assert!(!with_password.contains("hunter2"), "{with_password}");
        // A parameter is named, not its value, which may be a credential.
        let in_query =
            SmtpEndpoint::parse("smtp://host?tls=starttls&password=hunter2").unwrap_err();
        assert!(!in_query.contains("hunter2"), "{in_query}");
        assert!(
            in_query.contains("unknown URL parameter password"),
            "{in_query}"
        );
        assert!(SmtpEndpoint::parse("smtp://host?tls=maybe").is_err());
        assert!(SmtpEndpoint::parse("smtps://host?tls=starttls").is_err());
        assert!(SmtpEndpoint::parse("http://host").is_err());
    }

    #[test]
    fn redelivery_backs_off_to_an_hour() {
        assert_eq!(redelivery_delay(0), Duration::from_secs(60));
        assert_eq!(redelivery_delay(1), Duration::from_secs(120));
        assert_eq!(redelivery_delay(30), Duration::from_secs(3600));
    }
}
