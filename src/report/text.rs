//! The terminal rendering: counts first, then drift grouped by kind, then what
//! needs a human (held and failed actions). Colour only when asked (on a TTY).

use std::fmt::Write;

use super::{Outcome, Report, Tone};
use crate::model::DriftKind;

struct Style {
    colour: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }
    fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }
    fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }
}

pub(super) fn kind_title(kind: DriftKind) -> &'static str {
    match kind {
        DriftKind::StaleAccess => "Stale access (should no longer have access)",
        DriftKind::MissingAccount => "Missing accounts (in scope, never provisioned)",
        DriftKind::ReactivationDue => "Reactivations due",
        DriftKind::RoleDrift => "Role drift",
        DriftKind::GroupDrift => "Group drift",
        DriftKind::AttributeDrift => "Attribute drift",
        DriftKind::OrphanedAccount => "Orphaned accounts (no identity justifies them)",
        DriftKind::DisputedMatch => "Disputed matches (never acted on)",
        DriftKind::RetentionExpired => "Deactivated past their retention period (deleted)",
    }
}

/// Renders the report for a terminal. Deterministic for a given report. Run times
/// read in `tz` (`report.timezone`), and the commands it names are run as
/// `admin_command` (`report.admin_command`), as in the Markdown and HTML reports.
pub fn render_text(
    report: &Report,
    tz: chrono_tz::Tz,
    admin_command: &str,
    colour: bool,
) -> String {
    render_listing(report, tz, admin_command, colour, None)
}

/// [`render_text`] for an email: each list (drift of one kind, what needs
/// attention, the actions) shows its first [`super::digest::LISTED`] and says
/// which command prints the rest, as the digest does.
pub fn render_text_for_email(report: &Report, tz: chrono_tz::Tz, admin_command: &str) -> String {
    render_listing(
        report,
        tz,
        admin_command,
        false,
        Some(super::digest::LISTED),
    )
}

fn render_listing(
    report: &Report,
    tz: chrono_tz::Tz,
    admin_command: &str,
    colour: bool,
    listed: Option<usize>,
) -> String {
    let first = |n: usize| listed.map_or(n, |listed| n.min(listed));
    let more = |out: &mut String, total: usize| {
        if let Some(line) = super::templated::rest_of(total, listed, admin_command, report.run_id) {
            let _ = writeln!(out, "  {line}");
        }
    };
    let cleaned = super::printable_report(report);
    let report = &cleaned;
    let style = Style { colour };
    let s = &report.summary;
    let mut out = String::new();
    let (tone, text) = super::headline(report, admin_command);
    let headline = match tone {
        Tone::Bad => style.red(&text),
        Tone::Warn => style.yellow(&text),
        Tone::Good => style.green(&text),
    };
    let _ = writeln!(
        out,
        "{} run {} ({}): {}",
        style.bold("seatwarden"),
        report.run_id,
        report.mode,
        headline
    );
    let _ = writeln!(out, "  directory: {}", report.directory);
    let _ = writeln!(out, "  workspace: {}", report.workspace);
    let _ = writeln!(
        out,
        "  run: {} → {}",
        super::templated::timestamp(report.started_at, tz),
        super::templated::timestamp(report.finished_at, tz)
    );
    let _ = writeln!(
        out,
        "  {} identities, {} accounts ({} managed)",
        s.identities, s.accounts, s.managed_accounts
    );
    let _ = writeln!(
        out,
        "  actions: {} planned, {} applied, {} failed, {} held, {} not run; {} retries{}",
        s.actions_planned,
        s.actions_applied,
        s.actions_failed,
        s.actions_held,
        s.actions_not_run,
        s.retries,
        if s.recovered > 0 {
            format!("; {} recovered from an interrupted run", s.recovered)
        } else {
            String::new()
        }
    );

    render_safety(&mut out, report, tz, admin_command, &style);

    if let Some(why) = super::drift_not_computed(report) {
        let _ = writeln!(out, "\n{why}");
    } else if report.drift.is_empty() {
        let _ = writeln!(out, "\nNo drift.");
    } else {
        let _ = writeln!(out, "\nDrift ({}):", s.drift_total);
        for kind in DriftKind::ALL {
            let count = s.drift_by_kind.get(&kind).copied().unwrap_or(0);
            if count > 0 {
                let _ = writeln!(out, "  {:<18} {count}", kind.as_str());
            }
        }
        let drift = report.drift_on(tz);
        for kind in DriftKind::ALL {
            let items: Vec<_> = drift.iter().filter(|d| d.kind == kind).collect();
            if items.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{} ({})", style.bold(kind_title(kind)), items.len());
            for item in items.iter().take(first(items.len())) {
                let _ = writeln!(out, "  - {}: {}", item.user_name, item.detail);
            }
            more(&mut out, items.len());
        }
    }

    let mut attention: Vec<_> = report
        .actions
        .iter()
        .filter(|a| a.needs_attention())
        .collect();
    attention.sort_by_key(|a| (a.outcome != Outcome::Failed, a.seq));
    if !attention.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Needs attention"));
        let total = attention.len();
        for action in attention.into_iter().take(first(total)) {
            let label = match action.outcome {
                Outcome::Failed => style.red("FAILED"),
                _ => style.yellow("HELD"),
            };
            let _ = writeln!(
                out,
                "  {label} #{} {} {} — {}",
                action.seq,
                action.op,
                action.subject,
                action.error.as_deref().unwrap_or("")
            );
        }
        more(&mut out, total);
    }

    if !report.actions.is_empty() {
        let _ = writeln!(out, "\nActions:");
        for action in report.actions.iter().take(first(report.actions.len())) {
            // An action waiting for the settle window is not under "Needs
            // attention": here it says until when it waits; one not run says why
            // (rejected, not sent after the circuit breaker opened); one applied
            // with a note says it (its account was already gone).
            let waits = match (report.why_of(action, tz), action.outcome) {
                (Some(why), Outcome::Held) if action.waiting => format!(" — {why}"),
                (Some(why), Outcome::NotRun) => format!(" — {why}"),
                (Some(why), Outcome::Applied) if crate::apply::applied_note(Some(&why)) => {
                    format!(" — {why}")
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  #{:<4} {:<8} {:<17} {:<30} {}{waits}",
                action.seq,
                report.status_of(action),
                action.op,
                action.subject,
                action.detail_on(tz)
            );
        }
        more(&mut out, report.actions.len());
    }
    out
}

/// The safety net's findings; nothing when there are none (reports read as before).
fn render_safety(
    out: &mut String,
    report: &Report,
    tz: chrono_tz::Tz,
    admin_command: &str,
    style: &Style,
) {
    for finding in super::safety_findings(report, tz, admin_command) {
        match finding.label {
            Some(label) => {
                let label = match finding.tone {
                    Tone::Bad => style.red(label),
                    Tone::Warn => style.yellow(label),
                    Tone::Good => style.green(label),
                };
                let _ = writeln!(out, "\n{label} {}", finding.text);
            }
            None => {
                let _ = writeln!(out, "\n{}", finding.text);
            }
        }
        for detail in &finding.details {
            let _ = writeln!(out, "  {detail}");
        }
    }
}
