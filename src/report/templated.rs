//! Markdown and HTML renderings of a report (and of the digest), from minijinja
//! templates compiled into the binary. The templates get a flat view with every
//! value already formatted, so they only lay out; what a person reads is decided in
//! Rust and covered by golden tests.
//!
//! The HTML is written for mail clients, not browsers: tables for layout, inline
//! styles only (Gmail and Outlook drop `<style>` blocks and external CSS), no
//! images, and the state spelled out in words as well as colour.

use minijinja::Environment;
use serde::Serialize;

use super::{ActionOutcome, Outcome, Report, State, Summary, Tone, headline, kind_title};
use crate::model::{DriftItem, DriftKind};

/// A template failed to render: a bug in a template compiled into this binary.
#[derive(Debug, thiserror::Error)]
#[error("rendering {template}: {source}")]
pub struct RenderError {
    template: String,
    #[source]
    source: minijinja::Error,
}

const TEMPLATES: [(&str, &str); 5] = [
    ("alert.html", include_str!("templates/alert.html")),
    ("report.md", include_str!("templates/report.md")),
    ("report.html", include_str!("templates/report.html")),
    ("digest.md", include_str!("templates/digest.md")),
    ("digest.html", include_str!("templates/digest.html")),
];

/// `.html` templates are HTML-escaped (minijinja picks escaping by extension);
/// Markdown templates escape through the `md` filter.
fn environment() -> Result<Environment<'static>, RenderError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.add_filter("md", escape_markdown);
    env.add_filter("counted", counted);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .map_err(|source| RenderError {
                template: name.to_owned(),
                source,
            })?;
    }
    Ok(env)
}

/// `{{ n | counted("action", "actions") }}`: `1 action`, `3 actions`.
fn counted(n: u64, one: String, many: String) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Renders one of the compiled-in templates with `context`.
pub(super) fn render<S: Serialize>(template: &str, context: &S) -> Result<String, RenderError> {
    let error = |source| RenderError {
        template: template.to_owned(),
        source,
    };
    let env = environment()?;
    let compiled = env.get_template(template).map_err(error)?;
    let rendered = compiled
        .render(minijinja::Value::from_serialize(context))
        .map_err(error)?;
    // The templates hold no control character but newlines and tabs: any other
    // came from a name or a provider's message, and would reach the terminal of
    // whoever prints the report (an escape sequence) or hide text (bidi).
    Ok(match super::printable(&rendered, true) {
        std::borrow::Cow::Borrowed(_) => rendered,
        std::borrow::Cow::Owned(clean) => clean,
    })
}

/// Backslash-escapes what Markdown would otherwise read as markup, and keeps table
/// cells on one line, so a userName like `a_b*c` or a detail with `|` reads as written.
fn escape_markdown(text: String) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// The colour of the state band; the state is also written out, so nothing depends
/// on seeing colour.
pub(super) fn accent(state: State) -> &'static str {
    match state {
        State::Unknown => "#57606a",
        State::InSync => "#1a7f37",
        State::Drift => "#9a6700",
        State::NeedsAttention => "#cf222e",
    }
}

pub(super) fn tone_colour(tone: Tone) -> &'static str {
    match tone {
        Tone::Good => "#1a7f37",
        Tone::Warn => "#9a6700",
        Tone::Bad => "#cf222e",
    }
}

/// On the wall clock of `report.timezone`, as digests and alerts are, with the
/// UTC offset and the zone's abbreviation ([`crate::model::clock_time`]).
pub(super) fn timestamp(at: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> String {
    crate::model::clock_time(at, tz, "%Y-%m-%d %H:%M:%S")
}

#[derive(Debug, Serialize)]
pub(super) struct KindCount {
    pub kind: DriftKind,
    pub title: &'static str,
    pub count: usize,
}

#[derive(Debug, Serialize)]
pub(super) struct DriftGroup<'a> {
    pub kind: DriftKind,
    pub title: &'static str,
    pub items: Vec<&'a DriftItem>,
    /// How many there are, when `items` lists only the first of them.
    pub count: usize,
    /// `… and N more: …`, when `items` lists only the first of them.
    pub more: Option<String>,
}

/// Drift grouped by kind in the order every renderer uses; empty kinds left out.
pub(super) fn drift_groups(drift: &[DriftItem]) -> Vec<DriftGroup<'_>> {
    DriftKind::ALL
        .into_iter()
        .map(|kind| {
            let items: Vec<&DriftItem> = drift.iter().filter(|d| d.kind == kind).collect();
            DriftGroup {
                kind,
                title: kind_title(kind),
                count: items.len(),
                items,
                more: None,
            }
        })
        .filter(|group| !group.items.is_empty())
        .collect()
}

#[derive(Debug, Serialize)]
struct ActionRow<'a> {
    seq: u32,
    status: &'static str,
    op: &'a str,
    subject: &'a str,
    detail: std::borrow::Cow<'a, str>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ReportView<'a> {
    state: State,
    state_label: &'static str,
    accent: &'static str,
    headline: String,
    headline_colour: &'static str,
    run_id: i64,
    mode: &'a str,
    started_at: String,
    finished_at: String,
    directory: &'a str,
    workspace: &'a str,
    summary: &'a Summary,
    /// Drift still there after the run (see [`super::residual_drift`]).
    drift_left: usize,
    drift_counts: Vec<KindCount>,
    drift_groups: Vec<DriftGroup<'a>>,
    /// Said instead of "No drift." (see [`super::drift_not_computed`]).
    drift_not_computed: Option<&'static str>,
    attention: Vec<ActionRow<'a>>,
    /// `… and N more: …` when `attention` lists only the first of them (email).
    attention_more: Option<String>,
    actions: Vec<ActionRow<'a>>,
    /// `… and N more: …` when `actions` lists only the first of them (email).
    actions_more: Option<String>,
    safety: Vec<super::SafetyFinding>,
    /// How people run seatwarden's commands here, for the footer's command.
    admin_command: String,
}

fn action_row<'a>(report: &Report, action: &'a ActionOutcome, tz: chrono_tz::Tz) -> ActionRow<'a> {
    ActionRow {
        seq: action.seq,
        status: report.status_of(action),
        op: &action.op,
        subject: &action.subject,
        detail: action.detail_on(tz),
        error: report.why_of(action, tz),
    }
}

/// `drift` is the report's, on `tz`'s clock ([`Report::drift_on`]); commands are
/// run as `admin_command`.
/// The line that says where the rest of a list cut at `listed` is: the whole
/// report, printed.
pub(super) fn rest_of(
    total: usize,
    listed: Option<usize>,
    admin_command: &str,
    run_id: i64,
) -> Option<String> {
    let listed = listed?;
    (total > listed).then(|| {
        format!(
            "… and {} more: `{admin_command} report --run {run_id}` lists every one.",
            total - listed
        )
    })
}

/// The report's view; with `listed`, each list (drift of one kind, what needs
/// attention, the actions) shows only its first `listed`, and says where the rest
/// is: an email of a run over thousands of people must stay readable and
/// deliverable, as the digest's does.
fn report_view<'a>(
    report: &'a Report,
    drift: &'a [DriftItem],
    tz: chrono_tz::Tz,
    admin_command: &str,
    listed: Option<usize>,
) -> ReportView<'a> {
    let first = |n: usize| listed.map_or(n, |listed| n.min(listed));
    let rest = |total: usize| rest_of(total, listed, admin_command, report.run_id);
    let state = State::of(report);
    let (tone, headline) = headline(report, admin_command);
    let mut attention: Vec<&ActionOutcome> = report
        .actions
        .iter()
        .filter(|a| a.needs_attention())
        .collect();
    attention.sort_by_key(|a| (a.outcome != Outcome::Failed, a.seq));
    ReportView {
        admin_command: admin_command.to_owned(),
        state,
        state_label: state.label(),
        accent: accent(state),
        headline,
        headline_colour: tone_colour(tone),
        run_id: report.run_id,
        mode: &report.mode,
        started_at: timestamp(report.started_at, tz),
        finished_at: timestamp(report.finished_at, tz),
        directory: &report.directory,
        workspace: &report.workspace,
        summary: &report.summary,
        drift_left: super::residual_drift(report).len(),
        drift_counts: DriftKind::ALL
            .into_iter()
            .map(|kind| KindCount {
                kind,
                title: kind_title(kind),
                count: report
                    .summary
                    .drift_by_kind
                    .get(&kind)
                    .copied()
                    .unwrap_or(0),
            })
            .filter(|c| c.count > 0)
            .collect(),
        drift_groups: drift_groups(drift)
            .into_iter()
            .map(|mut group| {
                group.items.truncate(first(group.count));
                group.more = rest(group.count);
                group
            })
            .collect(),
        drift_not_computed: super::drift_not_computed(report),
        attention_more: rest(attention.len()),
        attention: attention
            .iter()
            .take(first(attention.len()))
            .map(|a| action_row(report, a, tz))
            .collect(),
        actions_more: rest(report.actions.len()),
        actions: report
            .actions
            .iter()
            .take(first(report.actions.len()))
            .map(|a| action_row(report, a, tz))
            .collect(),
        safety: super::safety_findings(report, tz, admin_command),
    }
}

/// The report as Markdown (tickets, chat, wikis), times in `tz`, commands run as
/// `admin_command`. Deterministic for a given report, zone and command.
pub fn render_markdown(
    report: &Report,
    tz: chrono_tz::Tz,
    admin_command: &str,
) -> Result<String, RenderError> {
    render(
        "report.md",
        &report_view(report, &report.drift_on(tz), tz, admin_command, None),
    )
}

/// The report as a self-contained HTML document for email and browsers, times in
/// `tz`, commands run as `admin_command`. Deterministic for a given report, zone
/// and command.
pub fn render_html(
    report: &Report,
    tz: chrono_tz::Tz,
    admin_command: &str,
) -> Result<String, RenderError> {
    render(
        "report.html",
        &report_view(report, &report.drift_on(tz), tz, admin_command, None),
    )
}

/// [`render_html`] for an email: each list shows its first
/// [`super::digest::LISTED`] and says which command prints the rest.
pub fn render_html_for_email(
    report: &Report,
    tz: chrono_tz::Tz,
    admin_command: &str,
) -> Result<String, RenderError> {
    render(
        "report.html",
        &report_view(
            report,
            &report.drift_on(tz),
            tz,
            admin_command,
            Some(super::digest::LISTED),
        ),
    )
}

#[derive(Debug, Serialize)]
struct AlertView<'a> {
    subject: &'a str,
    title: &'a str,
    accent: &'static str,
    label: &'static str,
    lines: &'a [String],
}

/// The HTML part of an alert or of its resolution.
pub fn render_alert_html(
    subject: &str,
    title: &str,
    resolved: bool,
    lines: &[String],
) -> Result<String, RenderError> {
    let (state, label) = if resolved {
        (State::InSync, "Resolved")
    } else {
        (State::NeedsAttention, "Alert")
    };
    render(
        "alert.html",
        &AlertView {
            subject,
            title,
            accent: accent(state),
            label,
            lines,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::escape_markdown;

    #[test]
    fn markdown_markup_in_names_is_escaped() {
        assert_eq!(
            escape_markdown("a_b*c|d [x](y)\nz".into()),
            "a\\_b\\*c\\|d \\[x\\](y) z"
        );
    }
}
