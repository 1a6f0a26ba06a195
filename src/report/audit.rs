//! `seatwarden audit`: the audit trail of human decisions (approve, reject, link,
//! unlink, resume, `--accept-directory`, `--allow-over-threshold`, `--workspace-moved`),
//! as text for a person and as JSON lines for a log shipper or a SIEM. Before it,
//! the rows were only in the `audit` table, readable with `sqlite3` and the schema
//! at hand: "who approved last Tuesday's 40 deactivations?" had no command.
//!
//! Pure: rows and the time zone in, text out.

use chrono_tz::Tz;
use serde::Serialize;

use crate::store::AuditRow;

use super::{local_time, printable_field};

/// One row per line, each field made [`printable_field`]: the person comes from
/// `$SEATWARDEN_OPERATOR` or `$SUDO_USER` and the detail holds directory ids, so
/// neither may drive the reader's terminal or forge a line. `scope` says which
/// rows were asked for (`in the last 7 days`), empty for all.
pub fn render_text(rows: &[AuditRow], tz: Tz, scope: &str) -> String {
    let mut out = String::new();
    let entries = match rows.len() {
        1 => "1 entry".to_owned(),
        n => format!("{n} entries"),
    };
    let scope = match scope.is_empty() {
        true => String::new(),
        false => format!(" {scope}"),
    };
    out.push_str(&format!("audit trail: {entries}{scope}\n"));
    for row in rows {
        let entry = &row.entry;
        let run = entry
            .run
            .map(|run| format!(" (run {run})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "#{}  {}  {}  {}{run}: {}\n",
            row.id,
            local_time(entry.at, tz),
            printable_field(&entry.user),
            printable_field(&entry.command),
            printable_field(&entry.detail),
        ));
    }
    out
}

/// The JSON line of one row: `id`, `at` (RFC 3339, UTC), `user`, `command`, `run`
/// (null when the decision was about no run) and `detail`.
#[derive(Serialize)]
struct JsonRow<'a> {
    id: i64,
    at: String,
    user: &'a str,
    command: &'a str,
    run: Option<i64>,
    detail: &'a str,
}

/// One JSON object per line (JSON Lines), oldest first: a shipper appends what
/// came after the last `id` it read (`--after ID`) and never re-parses a whole
/// document. Strings keep their characters; JSON escapes the control ones.
pub fn render_json_lines(rows: &[AuditRow]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for row in rows {
        let line = serde_json::to_string(&JsonRow {
            id: row.id,
            at: row
                .entry
                .at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            user: &row.entry.user,
            command: &row.entry.command,
            run: row.entry.run,
            detail: &row.entry.detail,
        })?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::store::AuditEntry;

    fn row(id: i64, user: &str, command: &str, run: Option<i64>, detail: &str) -> AuditRow {
        AuditRow {
            id,
            entry: AuditEntry {
                at: Utc.with_ymd_and_hms(2026, 12, 1, 8, 12, 3).unwrap(),
                user: user.to_owned(),
                command: command.to_owned(),
                run,
                detail: detail.to_owned(),
            },
        }
    }

    #[test]
    fn text_lists_each_decision_on_its_own_line_on_the_reports_clock() {
        let rows = [
            row(
                3,
                "alice (as seatwarden)",
                "approve",
                Some(12),
                "approved 2 held actions",
            ),
            row(
                4,
                "bob",
                "link",
                None,
                "linked identity 00u1 to account ws-1",
            ),
        ];
        let text = render_text(&rows, chrono_tz::Europe::Berlin, "in the last 7 days");
        assert_eq!(
            text,
            "audit trail: 2 entries in the last 7 days\n\
             #3  2026-12-01 09:12:03 +01:00 (CET)  alice (as seatwarden)  approve (run 12): \
             approved 2 held actions\n\
             #4  2026-12-01 09:12:03 +01:00 (CET)  bob  link: linked identity 00u1 to account ws-1\n"
        );
        assert_eq!(
            render_text(&[], chrono_tz::UTC, ""),
            "audit trail: 0 entries\n"
        );
    }

    #[test]
    fn text_cannot_be_driven_by_an_operator_name_or_a_forged_line() {
        let rows = [row(
            1,
            "mallory\x1b[2J",
            "reject",
            Some(1),
            "x\n#2  forged: approved everything",
        )];
        let text = render_text(&rows, chrono_tz::UTC, "");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn json_lines_carry_ids_and_utc_times_one_row_per_line() {
        let rows = [
            row(
                7,
                "alice",
                "resume",
                None,
                "closed the breaker\nopened by 5xx",
            ),
            row(8, "bob", "reject", Some(3), "rejected 1 held action"),
        ];
        let out = render_json_lines(&rows).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({"id": 7, "at": "2026-12-01T08:12:03Z", "user": "alice",
                "command": "resume", "run": null, "detail": "closed the breaker\nopened by 5xx"})
        );
        assert_eq!(lines[1]["run"], 3);
        assert_eq!(render_json_lines(&[]).unwrap(), "");
    }
}
