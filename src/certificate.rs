//! When the certificates seatwarden is given run out. An expired
//! `directory.certificate_file` (an Entra certificate credential) makes Entra
//! refuse every token request, so every directory read fails and nobody who
//! leaves is deactivated. A `ca_file`'s CAs are trusted as they are (rustls does
//! not check a trust anchor's own dates), but the server certificates a CA
//! issued seldom outlive it, and once those expire every TLS handshake with
//! that server fails: a CA's end date is when to have its successor's
//! certificates in place. Both are dates known in advance:
//! `check-config` shows each certificate file's (and fails on one past); the
//! daemon warns at its start and at each reload while one runs out within
//! [`WARN_BEFORE`]; the digest and `status` list those ([`notices`]); and
//! `/metrics` exports every date (`seatwarden_certificate_expiry_timestamp_seconds{key}`)
//! for an alert.
//!
//! A file's date ([`usable_until`]): for a certificate credential, the first
//! certificate's (the one registered on the app; a chain may follow it); for a
//! `ca_file`, the latest of its certificates' (one valid CA keeps the file of use,
//! and a bundle in rotation holds the old CA beside its successor).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use crate::config::Config;

/// How long before a certificate runs out the daemon, `check-config`, the
/// digest and `status` tell it.
pub const WARN_BEFORE: Duration = Duration::days(21);

/// The configuration key of an Entra certificate credential.
pub const CREDENTIAL_KEY: &str = "directory.certificate_file";

/// A certificate file of the configuration and when it stops being of use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub key: &'static str,
    pub file: PathBuf,
    pub not_after: DateTime<Utc>,
}

/// Where a certificate stands at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Valid,
    /// Runs out within [`WARN_BEFORE`].
    RunningOut,
    Expired,
}

impl Expiry {
    pub fn standing(&self, now: DateTime<Utc>) -> Standing {
        // Valid through its notAfter second (RFC 5280 §4.1.2.5), as webpki has it.
        if self.not_after < now {
            Standing::Expired
        } else if self.not_after - now <= WARN_BEFORE {
            Standing::RunningOut
        } else {
            Standing::Valid
        }
    }

    /// `directory.certificate_file: the certificate credential valid until
    /// 2027-03-01 09:00 +01:00 (CET), in 86 days (FILE)`, on `tz`'s clock, with
    /// what to do once it runs out within [`WARN_BEFORE`]; `… expired at …` once
    /// it has.
    pub fn describe(&self, now: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
        let at = crate::model::clock_time(self.not_after, tz, "%Y-%m-%d %H:%M");
        let what = match self.key {
            CREDENTIAL_KEY => "the certificate credential",
            _ => "its CA certificates",
        };
        match self.standing(now) {
            Standing::Expired => format!(
                "{}: {what} expired at {at} ({})",
                self.key,
                self.file.display()
            ),
            standing => {
                let left = self.not_after - now;
                let days = left.num_days();
                let left = match (days, left.num_hours()) {
                    (0, 0) => "in less than an hour".to_owned(),
                    (0, 1) => "in 1 hour".to_owned(),
                    (0, hours) => format!("in {hours} hours"),
                    (1, _) => "in 1 day".to_owned(),
                    (n, _) => format!("in {n} days"),
                };
                let soon = match standing {
                    Standing::RunningOut => match self.key {
                        CREDENTIAL_KEY => {
                            ": register its successor on the app and point \
                             directory.certificate_file at it"
                        }
                        _ => ": put the CA's successor into the file",
                    },
                    _ => "",
                };
                format!(
                    "{}: {what} valid until {at}, {left}{soon} ({})",
                    self.key,
                    self.file.display()
                )
            }
        }
    }
}

/// A certificate file that runs out within [`WARN_BEFORE`], or has: what the
/// digest and `status` list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notice {
    /// The configuration key: `directory.certificate_file`, `workspace.ca_file`, …
    pub key: String,
    pub file: String,
    /// When it runs out, on the reader's clock ([`crate::model::clock_time`]).
    pub runs_out: String,
    pub runs_out_at: DateTime<Utc>,
    pub expired: bool,
    /// The line `check-config` gives it ([`Expiry::describe`]).
    pub text: String,
}

/// The [`Notice`]s of `expiries` at `now`: those that run out within
/// [`WARN_BEFORE`] or have, on `tz`'s clock.
pub fn notices(expiries: &[Expiry], now: DateTime<Utc>, tz: chrono_tz::Tz) -> Vec<Notice> {
    expiries
        .iter()
        .filter_map(|expiry| {
            let expired = match expiry.standing(now) {
                Standing::Valid => return None,
                Standing::RunningOut => false,
                Standing::Expired => true,
            };
            Some(Notice {
                key: expiry.key.to_owned(),
                file: expiry.file.display().to_string(),
                runs_out: crate::model::clock_time(expiry.not_after, tz, "%Y-%m-%d %H:%M"),
                runs_out_at: expiry.not_after,
                expired,
                text: crate::report::printable_field(&expiry.describe(now, tz)),
            })
        })
        .collect()
}

/// `Certificates running out (N):` and a line each, as the digest's and
/// `status`'s text give them; nothing without a notice.
pub fn notices_text(notices: &[Notice]) -> String {
    if notices.is_empty() {
        return String::new();
    }
    let mut text = format!("Certificates running out ({}):\n", notices.len());
    for notice in notices {
        text.push_str(&format!("  - {}\n", notice.text));
    }
    text
}

/// The date a certificate file of `key` stops being of use (see the module
/// docs); `None` without a certificate in it. A certificate that cannot be
/// parsed is an error naming its place in the file.
pub fn usable_until(key: &str, pem: &[u8]) -> Result<Option<DateTime<Utc>>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut dates = Vec::new();
    for (index, der) in rustls_pki_types::CertificateDer::pem_slice_iter(pem).enumerate() {
        let der = der.map_err(|e| format!("certificate {}: {e}", index + 1))?;
        let (_, certificate) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("certificate {}: not an X.509 certificate: {e}", index + 1))?;
        let seconds = certificate.validity().not_after.timestamp();
        let date = DateTime::from_timestamp(seconds, 0).ok_or_else(|| {
            format!(
                "certificate {}: its notAfter ({seconds}) is out of range",
                index + 1
            )
        })?;
        dates.push(date);
    }
    Ok(match key {
        CREDENTIAL_KEY => dates.first().copied(),
        _ => dates.into_iter().max(),
    })
}

/// The certificate files of `config` (the credential and every `ca_file`), each
/// read now; one that cannot be read or parsed as its key and error (the runs
/// and `check-config` report it where it is used, naming the key), one without a
/// certificate not at all.
pub fn of_config(config: &Config) -> Vec<Result<Expiry, (&'static str, String)>> {
    of_files(&files(config))
}

/// The certificate files of `config` by key, without reading them.
pub fn files(config: &Config) -> Vec<(&'static str, PathBuf)> {
    config
        .files()
        .into_iter()
        .filter(|(key, _)| *key == CREDENTIAL_KEY || key.ends_with(".ca_file"))
        .map(|(key, file)| (key, file.to_owned()))
        .collect()
}

/// [`of_config`] of the [`files`] of a configuration, each read now.
pub fn of_files(files: &[(&'static str, PathBuf)]) -> Vec<Result<Expiry, (&'static str, String)>> {
    files
        .iter()
        .filter_map(|(key, file)| match read(key, file) {
            Ok(Some(expiry)) => Some(Ok(expiry)),
            Ok(None) => None,
            Err(e) => Some(Err((*key, e))),
        })
        .collect()
}

fn read(key: &'static str, file: &Path) -> Result<Option<Expiry>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let not_after = usable_until(key, &pem).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(not_after.map(|not_after| Expiry {
        key,
        file: file.to_owned(),
        not_after,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
    }

    /// `openssl x509 -noout -enddate` of the fixtures.
    fn test_cert_end() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2126, 11, 6, 1, 33, 10).unwrap()
    }
    fn ca_end() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2126, 11, 10, 2, 46, 41).unwrap()
    }

    #[test]
    fn a_files_date_is_its_credentials_or_its_latest_cas() {
        let cert = fixture("tests/fixtures/keys/test-cert.pem");
        let ca = fixture("tests/fixtures/tls/ca.pem");
        assert_eq!(
            usable_until(CREDENTIAL_KEY, &cert).unwrap(),
            Some(test_cert_end())
        );
        assert_eq!(
            usable_until("workspace.ca_file", &ca).unwrap(),
            Some(ca_end())
        );
        // Credential first, CA after it: the credential's own date, the earlier.
        let both = [cert.clone(), ca.clone()].concat();
        assert_eq!(
            usable_until(CREDENTIAL_KEY, &both).unwrap(),
            Some(test_cert_end())
        );
        // A bundle: the latest CA, whatever the order.
        let bundle = [ca, cert].concat();
        assert_eq!(
            usable_until("directory.ca_file", &bundle).unwrap(),
            Some(ca_end())
        );
        assert_eq!(usable_until("workspace.ca_file", b"no pem").unwrap(), None);
    }

    #[test]
    fn a_certificate_that_is_no_x509_says_which() {
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let ca = fixture("tests/fixtures/tls/ca.pem");
        let error =
            usable_until("workspace.ca_file", &[ca, garbage.to_vec()].concat()).unwrap_err();
        assert!(
            error.starts_with("certificate 2: not an X.509 certificate"),
            "{error}"
        );
    }

    #[test]
    fn a_certificate_runs_out_within_three_weeks_and_expires_at_its_not_after() {
        let expiry = Expiry {
            key: CREDENTIAL_KEY,
            file: PathBuf::from("/etc/seatwarden/entra.pem"),
            not_after: test_cert_end(),
        };
        let before = |d: Duration| test_cert_end() - d;
        assert_eq!(expiry.standing(before(Duration::days(22))), Standing::Valid);
        assert_eq!(
            expiry.standing(before(Duration::days(21))),
            Standing::RunningOut
        );
        assert_eq!(
            expiry.standing(before(Duration::seconds(1))),
            Standing::RunningOut
        );
        assert_eq!(expiry.standing(test_cert_end()), Standing::RunningOut);
        assert_eq!(
            expiry.standing(test_cert_end() + Duration::seconds(1)),
            Standing::Expired
        );

        let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            expiry.describe(before(Duration::days(30)), tz),
            "directory.certificate_file: the certificate credential valid until \
             2126-11-06 02:33 +01:00 (CET), in 30 days (/etc/seatwarden/entra.pem)"
        );
        assert_eq!(
            expiry.describe(before(Duration::hours(5)), tz),
            "directory.certificate_file: the certificate credential valid until \
             2126-11-06 02:33 +01:00 (CET), in 5 hours: register its successor on the app \
             and point directory.certificate_file at it (/etc/seatwarden/entra.pem)"
        );
        assert!(
            expiry
                .describe(before(Duration::minutes(20)), tz)
                .contains(", in less than an hour:"),
        );
        assert!(
            expiry
                .describe(before(Duration::minutes(61)), tz)
                .contains(", in 1 hour:"),
        );
        let ca = Expiry {
            key: "workspace.ca_file",
            ..expiry
        };
        assert_eq!(
            ca.describe(test_cert_end() + Duration::days(1), tz),
            "workspace.ca_file: its CA certificates expired at 2126-11-06 02:33 +01:00 (CET) \
             (/etc/seatwarden/entra.pem)"
        );
    }
}
