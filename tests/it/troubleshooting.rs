//! The README's "When something goes wrong" section against the code: every
//! message it quotes (the code spans of its table's first column) is one the
//! sources under `src/` print, every link in it leads to a heading of the README,
//! and every exit code it names is one the "Exit codes" table explains. So the
//! section cannot drift silently from what seatwarden says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

const SECTION: &str = "## When something goes wrong";

pub(crate) fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The lines of the `## ` section headed `heading`, up to the next `## ` heading
/// (the heading excluded). Fenced code is not looked into.
pub(crate) fn section<'a>(readme: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = readme.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "README.md has no {heading:?}");
    lines.take_while(|l| !l.starts_with("## ")).collect()
}

/// The code spans of Markdown text: a run of backticks opens one, the next run
/// of the same length closes it (CommonMark); the content is trimmed of one
/// space on each side when it has both, as CommonMark strips it.
pub(crate) fn code_spans(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let open = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        let start = i + open;
        let mut j = start;
        let mut closed = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let run = bytes[j..].iter().take_while(|&&b| b == b'`').count();
                if run == open {
                    closed = Some(j);
                    break;
                }
                j += run;
            } else {
                j += 1;
            }
        }
        let Some(end) = closed else {
            panic!("an unclosed code span in {text:?}");
        };
        let content = &text[start..end];
        let content = match content.strip_prefix(' ').and_then(|c| c.strip_suffix(' ')) {
            Some(inner) if !inner.trim().is_empty() && open > 1 => inner,
            _ => content,
        };
        spans.push(content.to_owned());
        i = end + open;
    }
    spans
}

/// The cells of a table row, split at `|` outside code spans (`\|` is a pipe).
pub(crate) fn cells(row: &str) -> Vec<String> {
    let row = row.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let row = row.strip_suffix('|').unwrap_or(row);
    let mut cells = vec![String::new()];
    let mut in_code = false;
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '`' => {
                in_code = !in_code;
                cells.last_mut().unwrap().push(c);
            }
            '|' if !in_code => cells.push(String::new()),
            _ => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The body rows of the section's table(s), as cells: header and delimiter rows
/// left out.
pub(crate) fn rows(lines: &[&str]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut previous_was_row = false;
    for line in lines {
        let is_row = line.trim_start().starts_with('|');
        if is_row && previous_was_row && !line.contains("---") {
            rows.push(cells(line));
        }
        previous_was_row = is_row;
    }
    rows
}

/// A Rust source as the text it prints: string continuations (`\` at a line's
/// end, and the next line's indentation) joined and `\"` read as `"`; unit-test
/// modules left out, so a message only a test spells does not count.
fn printable(source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let end = lines
        .iter()
        .enumerate()
        .find(|(i, line)| {
            line.trim() == "#[cfg(test)]"
                && lines[i + 1..]
                    .iter()
                    .find(|l| !l.trim_start().starts_with("#["))
                    .is_some_and(|l| l.trim_start().starts_with("mod tests"))
        })
        .map_or(lines.len(), |(i, _)| i);
    let mut out = String::new();
    let mut joining = false;
    for line in &lines[..end] {
        let line = if joining { line.trim_start() } else { line };
        match line.strip_suffix('\\') {
            Some(head) => {
                out.push_str(head);
                joining = true;
            }
            None => {
                out.push_str(line);
                out.push('\n');
                joining = false;
            }
        }
    }
    out.replace("\\\"", "\"")
}

/// Every source file under `src/` (Rust, and the report templates), as
/// [`printable`] reads it; `tests.rs` files, unit tests, left out.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n != "tests.rs")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                let text = if path.extension().is_some_and(|e| e == "rs") {
                    printable(&text)
                } else {
                    text
                };
                out.push((path.display().to_string(), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    assert!(out.len() > 20, "too few sources under src/: {}", out.len());
    out
}

/// GitHub's anchor of a heading: lower case, spaces to `-`, every character but
/// letters, digits, `-` and `_` dropped; a repeated heading gets `-1`, `-2`, ….
fn anchors(readme: &str) -> Vec<String> {
    let mut anchors: Vec<String> = Vec::new();
    let mut fenced = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#');
        if !text.starts_with(' ') {
            continue;
        }
        let slug: String = text
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let taken = anchors
            .iter()
            .filter(|a| {
                **a == slug
                    || a.strip_prefix(&format!("{slug}-"))
                        .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count();
        anchors.push(if taken == 0 {
            slug
        } else {
            format!("{slug}-{taken}")
        });
    }
    anchors
}

/// The targets of the in-page links (`](#anchor)`) in `text`.
fn page_links(text: &str) -> Vec<String> {
    text.match_indices("](#")
        .map(|(at, _)| {
            let rest = &text[at + 3..];
            rest[..rest.find(')').expect("an unclosed link")].to_owned()
        })
        .collect()
}

#[test]
fn every_message_the_section_quotes_is_one_the_code_prints() {
    let readme = readme();
    let rows = rows(&section(&readme, SECTION));
    assert!(
        rows.len() >= 20,
        "the section's table has {} rows",
        rows.len()
    );
    let sources = sources();
    let mut wrong = Vec::new();
    for row in &rows {
        assert_eq!(row.len(), 3, "a row without three cells: {row:?}");
        let quoted = code_spans(&row[0]);
        if quoted.is_empty() {
            wrong.push(format!("quotes nothing seatwarden prints: {:?}", row[0]));
        }
        for message in quoted {
            if message.chars().count() < 8 {
                wrong.push(format!("too short to tell one message: `{message}`"));
            } else if message.contains(['{', '}']) {
                wrong.push(format!("quotes a placeholder: `{message}`"));
            } else if !sources.iter().any(|(_, text)| text.contains(&message)) {
                wrong.push(format!("no source under src/ prints `{message}`"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_link_in_the_section_leads_to_a_heading_of_the_readme() {
    let readme = readme();
    let anchors = anchors(&readme);
    // The anchor rules, on headings with punctuation and code.
    for heading in [
        "running-as-a-service-seatwarden-daemon",
        "quickstart-your-directory-your-workspace",
        "email-digest-alerts-outbox",
    ] {
        assert!(
            anchors.iter().any(|a| a == heading),
            "{heading}: {anchors:?}"
        );
    }
    let lines = section(&readme, SECTION);
    for row in rows(&lines) {
        assert!(
            row[1..].iter().any(|cell| !page_links(cell).is_empty()),
            "a row that points to no section: {row:?}"
        );
    }
    let links = page_links(&lines.join("\n"));
    assert!(links.len() >= 20, "{links:?}");
    let broken: Vec<_> = links.iter().filter(|l| !anchors.contains(l)).collect();
    assert!(broken.is_empty(), "links to no heading: {broken:?}");
}

#[test]
fn the_section_comes_before_the_exit_codes_and_names_only_codes_they_explain() {
    let readme = readme();
    let headings: Vec<&str> = readme.lines().filter(|l| l.starts_with("## ")).collect();
    let at = headings.iter().position(|h| *h == SECTION).unwrap();
    assert_eq!(headings.get(at + 1), Some(&"## Exit codes"), "{headings:?}");
    let explained: Vec<String> = rows(&section(&readme, "## Exit codes"))
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    let mut named = Vec::new();
    for row in rows(&section(&readme, SECTION)) {
        for (at, _) in row[0].match_indices("exit ") {
            let code: String = row[0][at + 5..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            assert!(!code.is_empty(), "`exit` without a code: {:?}", row[0]);
            assert!(
                explained.contains(&code),
                "exit {code} is not in the Exit codes table"
            );
            named.push(code);
        }
    }
    for code in ["1", "3", "4", "5", "6", "7", "130"] {
        assert!(named.iter().any(|n| n == code), "no row names exit {code}");
    }
}
