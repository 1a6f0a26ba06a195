//! The SCIM filter subset the sandbox serves (RFC 7644 §3.4.2.2) and PATCH paths
//! (§3.5.2).
//!
//! Filters are `eq` comparisons (`attr eq "value"`) joined by `and` and `or`
//! (`and` binds tighter), optionally parenthesised, plus value paths such as
//! `members[value eq "id"]`, which flatten to `members.value eq "id"`. A filter is
//! kept in disjunctive normal form: it matches when every comparison of any one
//! of its conjunctions does. The sandbox can refuse `or`, as eq-only providers
//! (AWS IAM Identity Center) do. PATCH paths take conjunctions only. `not` and the
//! other operators are refused with `invalidFilter` rather than half-implemented, and
//! so is nesting deeper than [`MAX_DEPTH`].

use std::fmt;

/// A literal a comparison tests against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Literal {
    Str(String),
    Bool(bool),
    Null,
}

/// `attr eq value`. `attr` is lowercased, without a schema URN prefix, dotted for
/// sub-attributes (`name.givenname`, `members.value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Comparison {
    pub attr: String,
    pub value: Literal,
}

/// Comparisons that must all hold.
pub(crate) type Conjunction = Vec<Comparison>;

/// Conjunctions of which one must hold (disjunctive normal form); more than one
/// only when the filter says `or`.
pub(crate) type Filter = Vec<Conjunction>;

/// How many conjunctions a filter may expand to: `(a or b) and (c or d)` is four,
/// and nesting multiplies them.
const MAX_CONJUNCTIONS: usize = 1000;

/// How deeply `(` and `[` may nest. The parser recurses once per level, so an
/// unbounded filter of ~100k `(` would overflow the request task's stack and abort
/// the whole process; no filter a client means needs more than a few levels.
pub(crate) const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Str(String),
    Word(String),
}

fn tokenize(s: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '[' | ']' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '[' => Token::OpenBracket,
                    _ => Token::CloseBracket,
                });
            }
            '"' => {
                chars.next();
                // Collect the raw JSON string (escapes kept) and let serde_json decode
                // it: SCIM string literals follow JSON's rules (\" \\ \/ \uXXXX …).
                let mut raw = String::from('"');
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    raw.push(c);
                    if c == '\\' {
                        match chars.next() {
                            Some((_, e)) => raw.push(e),
                            None => break,
                        }
                    } else if c == '"' {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(FilterError(format!(
                        "unterminated string starting at offset {i}"
                    )));
                }
                let value: String = serde_json::from_str(&raw)
                    .map_err(|e| FilterError(format!("bad string literal {raw}: {e}")))?;
                tokens.push(Token::Str(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '"') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// Lowercases an attribute path and drops a schema URN prefix
/// (`urn:ietf:params:scim:schemas:core:2.0:User:userName` → `username`).
pub(crate) fn normalize_attr(attr: &str) -> String {
    // `get`, not `[..4]`: a name whose fourth byte is inside a character (`aéé`)
    // would panic the request's task, and in a PATCH leave a group half-changed.
    let urn = attr.len() > 4
        && attr
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("urn:"));
    let attr = if urn {
        attr.rsplit_once(':').map_or(attr, |(_, a)| a)
    } else {
        attr
    };
    attr.to_lowercase()
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// The `(` and `[` open around the current position.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// Enters one more `(` or `[`, refusing the level past [`MAX_DEPTH`].
    fn nest(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError(format!(
                "parentheses and brackets nest more than {MAX_DEPTH} deep"
            )));
        }
        Ok(())
    }

    fn disjunction(&mut self, prefix: Option<&str>) -> Result<Filter, FilterError> {
        let mut out = self.conjunction(prefix)?;
        while matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("or")) {
            self.pos += 1;
            out.extend(self.conjunction(prefix)?);
            too_complex(out.len())?;
        }
        Ok(out)
    }

    fn conjunction(&mut self, prefix: Option<&str>) -> Result<Filter, FilterError> {
        let mut out = self.term(prefix)?;
        while matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("and")) {
            self.pos += 1;
            let right = self.term(prefix)?;
            too_complex(out.len().saturating_mul(right.len()))?;
            // (a or b) and (c or d) = (a and c) or (a and d) or (b and c) or (b and d)
            out = out
                .iter()
                .flat_map(|left| {
                    right.iter().map(move |r| {
                        let mut both = left.clone();
                        both.extend(r.iter().cloned());
                        both
                    })
                })
                .collect();
        }
        Ok(out)
    }

    fn term(&mut self, prefix: Option<&str>) -> Result<Filter, FilterError> {
        match self.next() {
            Some(Token::Open) => {
                self.nest()?;
                let inner = self.disjunction(prefix)?;
                self.depth -= 1;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err(FilterError("missing \")\"".to_owned())),
                }
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("not") => {
                Err(FilterError("\"not\" is not supported".to_owned()))
            }
            Some(Token::Word(attr)) => {
                let attr = match prefix {
                    Some(p) => format!("{p}.{}", normalize_attr(&attr)),
                    None => normalize_attr(&attr),
                };
                if self.peek() == Some(&Token::OpenBracket) {
                    if prefix.is_some() {
                        return Err(FilterError("nested value filters".to_owned()));
                    }
                    self.pos += 1;
                    self.nest()?;
                    let inner = self.disjunction(Some(&attr))?;
                    self.depth -= 1;
                    return match self.next() {
                        Some(Token::CloseBracket) => Ok(inner),
                        _ => Err(FilterError("missing \"]\"".to_owned())),
                    };
                }
                match self.next() {
                    Some(Token::Word(op)) if op.eq_ignore_ascii_case("eq") => {}
                    Some(Token::Word(op)) => {
                        return Err(FilterError(format!(
                            "operator {op:?} is not supported (only eq, with and and or)"
                        )));
                    }
                    _ => return Err(FilterError(format!("{attr}: operator expected"))),
                }
                let value = match self.next() {
                    Some(Token::Str(s)) => Literal::Str(s),
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Literal::Null,
                    Some(Token::Word(w)) if w.parse::<f64>().is_ok() => Literal::Str(w),
                    _ => return Err(FilterError(format!("{attr} eq: value expected"))),
                };
                Ok(vec![vec![Comparison { attr, value }]])
            }
            _ => Err(FilterError("attribute expected".to_owned())),
        }
    }
}

fn too_complex(conjunctions: usize) -> Result<(), FilterError> {
    if conjunctions > MAX_CONJUNCTIONS {
        return Err(FilterError(format!(
            "the filter expands to more than {MAX_CONJUNCTIONS} alternatives"
        )));
    }
    Ok(())
}

pub(crate) fn parse_filter(s: &str) -> Result<Filter, FilterError> {
    let mut parser = Parser {
        tokens: tokenize(s)?,
        pos: 0,
        depth: 0,
    };
    if parser.tokens.is_empty() {
        return Err(FilterError("empty filter".to_owned()));
    }
    let filter = parser.disjunction(None)?;
    if parser.pos < parser.tokens.len() {
        return Err(FilterError(format!(
            "unexpected {:?} after the filter",
            parser.tokens[parser.pos]
        )));
    }
    Ok(filter)
}

/// A PATCH path: `attr`, `attr.sub`, `attr[filter]` or `attr[filter].sub`, all
/// lowercased; the filter's attributes are relative to `attr` (`value`, `type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path {
    pub attr: String,
    pub filter: Option<Conjunction>,
    pub sub: Option<String>,
}

pub(crate) fn parse_path(s: &str) -> Result<Path, FilterError> {
    let s = s.trim();
    let (head, bracket) = match s.find('[') {
        Some(i) => (&s[..i], Some(&s[i..])),
        None => (s, None),
    };
    let head = normalize_attr(head);
    if head.is_empty() {
        return Err(FilterError(format!("bad path {s:?}")));
    }
    match bracket {
        None => match head.split_once('.') {
            Some((attr, sub)) if !attr.is_empty() && !sub.is_empty() && !sub.contains('.') => {
                Ok(Path {
                    attr: attr.to_owned(),
                    filter: None,
                    sub: Some(sub.to_owned()),
                })
            }
            Some(_) => Err(FilterError(format!("bad path {s:?}"))),
            None => Ok(Path {
                attr: head,
                filter: None,
                sub: None,
            }),
        },
        Some(rest) => {
            let close = rest
                .rfind(']')
                .ok_or_else(|| FilterError(format!("bad path {s:?}: missing \"]\"")))?;
            let mut alternatives = parse_filter(&rest[1..close])?.into_iter();
            let filter = match (alternatives.next(), alternatives.next()) {
                (Some(only), None) => only,
                _ => return Err(FilterError(format!("bad path {s:?}: \"or\" in a path"))),
            };
            let after = &rest[close + 1..];
            let sub = match after.strip_prefix('.') {
                Some(sub) if !sub.is_empty() => Some(sub.to_lowercase()),
                None if after.is_empty() => None,
                _ => return Err(FilterError(format!("bad path {s:?}"))),
            };
            Ok(Path {
                attr: head,
                filter: Some(filter),
                sub,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn eq(attr: &str, value: &str) -> Comparison {
        Comparison {
            attr: attr.into(),
            value: Literal::Str(value.into()),
        }
    }

    #[test]
    fn parses_conjunctions_value_paths_and_escapes() {
        assert_eq!(
            parse_filter(r#"UserName EQ "a\"b\\c" and (externalId eq "x")"#).unwrap(),
            vec![vec![eq("username", "a\"b\\c"), eq("externalid", "x")]]
        );
        assert_eq!(
            parse_filter(r#"members[value eq "u1"]"#).unwrap(),
            vec![vec![eq("members.value", "u1")]]
        );
        assert_eq!(
            parse_filter(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "a""#).unwrap(),
            vec![vec![eq("username", "a")]]
        );
        assert_eq!(
            parse_filter("active eq false").unwrap(),
            vec![vec![Comparison {
                attr: "active".into(),
                value: Literal::Bool(false)
            }]]
        );
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        for bad in [
            r#"userName co "a""#,
            r#"not (userName eq "a")"#,
            r#"userName eq "a" or"#,
            r#"or userName eq "a""#,
            r#"(userName eq "a" or id eq "b""#,
            r#"userName eq "a"#,
            "userName eq",
            "",
            r#"userName eq "a" )"#,
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_distribute() {
        assert_eq!(
            parse_filter(r#"id eq "a" or ID eq "b" and active eq true or id eq "c""#).unwrap(),
            vec![
                vec![eq("id", "a")],
                vec![
                    eq("id", "b"),
                    Comparison {
                        attr: "active".into(),
                        value: Literal::Bool(true)
                    }
                ],
                vec![eq("id", "c")],
            ]
        );
        assert_eq!(
            parse_filter(r#"(id eq "a" OR id eq "b") and (userName eq "x" or userName eq "y")"#)
                .unwrap(),
            vec![
                vec![eq("id", "a"), eq("username", "x")],
                vec![eq("id", "a"), eq("username", "y")],
                vec![eq("id", "b"), eq("username", "x")],
                vec![eq("id", "b"), eq("username", "y")],
            ]
        );
        assert_eq!(
            parse_filter(r#"members[value eq "u1" or value eq "u2"]"#).unwrap(),
            vec![
                vec![eq("members.value", "u1")],
                vec![eq("members.value", "u2")]
            ]
        );
    }

    #[test]
    fn a_filter_that_expands_past_the_limit_is_refused() {
        // n two-way alternatives joined by `and` expand to 2^n conjunctions.
        let clause = r#"(id eq "a" or id eq "b")"#;
        let ten = [clause; 10].join(" and ");
        let error = parse_filter(&ten).unwrap_err();
        assert!(error.0.contains("more than 1000"), "{error}");
        let nine = [clause; 9].join(" and ");
        assert_eq!(parse_filter(&nine).unwrap().len(), 512);
    }

    #[test]
    fn nesting_past_the_limit_is_refused_not_a_stack_overflow() {
        let nested = |n: usize| format!(r#"{}id eq "a"{}"#, "(".repeat(n), ")".repeat(n));
        assert_eq!(
            parse_filter(&nested(MAX_DEPTH)).unwrap(),
            vec![vec![eq("id", "a")]]
        );
        let error = parse_filter(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(error.0.contains("nest more than 32"), "{error}");
        // Brackets count too: members[ is one level, the parentheses inside it the rest.
        let inside = format!(
            r#"members[{}value eq "u"{}]"#,
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert!(parse_filter(&inside).is_err(), "{inside}");
        // Far past any stack: refused as soon as the limit is passed.
        assert!(parse_filter(&"(".repeat(200_000)).is_err());
        assert!(parse_path(&format!("members[{}", "(".repeat(200_000))).is_err());
    }

    #[test]
    fn a_name_with_a_character_across_its_fourth_byte_is_no_panic() {
        // é is two bytes: the fourth byte of each is inside one.
        for name in ["aéé", "zéé", "ünïcode"] {
            assert_eq!(normalize_attr(name), name.to_lowercase());
            assert_eq!(
                parse_filter(&format!("{name} eq \"x\"")).unwrap(),
                vec![vec![eq(&name.to_lowercase(), "x")]]
            );
            assert_eq!(parse_path(name).unwrap().attr, name.to_lowercase());
        }
        assert_eq!(normalize_attr("URN:x:userName"), "username");
    }

    #[test]
    fn parses_patch_paths() {
        assert_eq!(
            parse_path("name.givenName").unwrap(),
            Path {
                attr: "name".into(),
                filter: None,
                sub: Some("givenname".into())
            }
        );
        assert_eq!(
            parse_path(r#"members[value eq "a]b"]"#).unwrap(),
            Path {
                attr: "members".into(),
                filter: Some(vec![eq("value", "a]b")]),
                sub: None
            }
        );
        assert_eq!(
            parse_path(r#"emails[type eq "work"].value"#).unwrap(),
            Path {
                attr: "emails".into(),
                filter: Some(vec![eq("type", "work")]),
                sub: Some("value".into())
            }
        );
        assert!(parse_path("a.b.c").is_err());
        assert!(parse_path(r#"members[value eq "a" or value eq "b"]"#).is_err());
        assert!(parse_path(r#"emails[type eq "work""#).is_err());
    }
}
