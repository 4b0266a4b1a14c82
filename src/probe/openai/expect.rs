//! Answer checks: the probe's optional `expect` on the answer to a deterministic canary prompt
//! (sent with `temperature = 0` and a `seed`). A relay that quietly serves another model, a
//! quantised copy or a cached answer tends to fail a question whose answer is known.
//!
//! Two forms: `expect = { regex = "…" }` (the answer must contain a match) and
//! `expect = { json_fields = ["a", "b.c"] }` (the answer must be a JSON object with those
//! fields present and not null; dots step into nested objects). A JSON answer wrapped in a
//! Markdown code fence is unwrapped first, as chat models often do that.
//!
//! Mismatch messages never quote the answer: it is the provider's text, not ours to log.

use regex::Regex;
use serde_json::Value;

/// Longest `regex` pattern accepted (the compiled size is capped by the regex crate too).
const MAX_PATTERN: usize = 4096;
/// Most `json_fields`, and the longest path.
const MAX_FIELDS: usize = 64;
const MAX_PATH: usize = 256;
/// The answer text kept for checking; a canary's answer is short.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A validated answer check.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The answer must contain a match of this expression.
    Regex(Regex),
    /// The answer must be a JSON object with these (dotted) fields present and not null.
    JsonFields(Vec<String>),
}

impl PartialEq for Expect {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Expect::Regex(a), Expect::Regex(b)) => a.as_str() == b.as_str(),
            (Expect::JsonFields(a), Expect::JsonFields(b)) => a == b,
            _ => false,
        }
    }
}

/// Why an answer failed its check, in words that do not quote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// No match of the expression.
    #[error("the answer does not match expect.regex")]
    NoMatch,
    /// The answer is not a JSON object.
    #[error("the answer is not a JSON object, as expect.json_fields requires")]
    NotJson,
    /// A field is missing or null.
    #[error("the answer's JSON lacks the field {0:?} that expect.json_fields requires")]
    MissingField(String),
    /// No answer text at all.
    #[error("the answer is empty")]
    Empty,
}

impl Expect {
    /// Builds a regex check; the error says what is wrong with the pattern.
    pub fn regex(pattern: &str) -> Result<Expect, String> {
        if pattern.is_empty() {
            return Err("must not be empty".into());
        }
        if pattern.len() > MAX_PATTERN {
            return Err(format!("is longer than {MAX_PATTERN} bytes"));
        }
        regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map(Expect::Regex)
            .map_err(|e| format!("is not a valid regular expression: {e}"))
    }

    /// Builds a JSON-fields check; the error says which path is wrong.
    pub fn json_fields(fields: &[String]) -> Result<Expect, String> {
        if fields.is_empty() || fields.len() > MAX_FIELDS {
            return Err(format!("list between 1 and {MAX_FIELDS} field paths"));
        }
        for f in fields {
            if f.is_empty() || f.len() > MAX_PATH || f.split('.').any(str::is_empty) {
                return Err(format!(
                    "{f:?} is not a field path (names joined by dots, at most {MAX_PATH} bytes)"
                ));
            }
        }
        Ok(Expect::JsonFields(fields.to_vec()))
    }

    /// Checks an answer.
    pub fn check(&self, answer: &str) -> Result<(), Mismatch> {
        if answer.trim().is_empty() {
            return Err(Mismatch::Empty);
        }
        match self {
            Expect::Regex(re) => re.is_match(answer).then_some(()).ok_or(Mismatch::NoMatch),
            Expect::JsonFields(fields) => {
                let v: Value =
                    serde_json::from_str(unfence(answer)).map_err(|_| Mismatch::NotJson)?;
                if !v.is_object() {
                    return Err(Mismatch::NotJson);
                }
                for f in fields {
                    let found = f
                        .split('.')
                        .try_fold(&v, |at, name| at.get(name))
                        .is_some_and(|x| !x.is_null());
                    if !found {
                        return Err(Mismatch::MissingField(f.clone()));
                    }
                }
                Ok(())
            }
        }
    }
}

/// The inside of a Markdown code fence (```` ```json … ``` ````), or the text trimmed.
fn unfence(answer: &str) -> &str {
    let t = answer.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let Some(body) = rest.strip_suffix("```") else {
        return t;
    };
    // Drop the info string (`json`) on the opening line.
    match body.split_once('\n') {
        Some((_, inner)) => inner.trim(),
        None => body.trim(),
    }
}

/// Appends `text` to an answer being collected, keeping at most [`MAX_ANSWER_BYTES`] (cut at
/// a character boundary).
pub fn push_answer(answer: &mut String, text: &str) {
    let room = MAX_ANSWER_BYTES.saturating_sub(answer.len());
    if room == 0 {
        return;
    }
    let mut end = text.len().min(room);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    answer.push_str(&text[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn regex_checks() {
        let e = Expect::regex(r"(?i)\bparis\b").unwrap();
        assert_eq!(e.check("The capital is Paris."), Ok(()));
        assert_eq!(e.check("Lyon"), Err(Mismatch::NoMatch));
        assert_eq!(e.check("  "), Err(Mismatch::Empty));
        assert!(Expect::regex("(").unwrap_err().contains("not a valid"));
        assert!(Expect::regex("").is_err());
        assert!(Expect::regex(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn json_field_checks() {
        let e = Expect::json_fields(&["answer".into(), "meta.lang".into()]).unwrap();
        assert_eq!(e.check(r#"{"answer":4,"meta":{"lang":"en"}}"#), Ok(()));
        assert_eq!(
            e.check("```json\n{\"answer\":4,\"meta\":{\"lang\":\"en\"}}\n```"),
            Ok(())
        );
        assert_eq!(
            e.check(r#"{"answer":4,"meta":{"lang":null}}"#),
            Err(Mismatch::MissingField("meta.lang".into()))
        );
        assert_eq!(
            e.check(r#"{"answer":4}"#),
            Err(Mismatch::MissingField("meta.lang".into()))
        );
        assert_eq!(e.check("[1,2]"), Err(Mismatch::NotJson));
        assert_eq!(e.check("four"), Err(Mismatch::NotJson));
        let msg = Mismatch::NoMatch.to_string();
        assert!(!msg.contains("four"));
        assert!(Expect::json_fields(&[]).is_err());
        assert!(Expect::json_fields(&["a..b".into()]).is_err());
    }

    #[test]
    fn answers_are_capped_at_a_char_boundary() {
        let mut a = String::new();
        push_answer(&mut a, &"é".repeat(MAX_ANSWER_BYTES));
        assert!(a.len() <= MAX_ANSWER_BYTES);
        assert!(a.len() >= MAX_ANSWER_BYTES - 1);
        push_answer(&mut a, "more");
        assert!(a.len() <= MAX_ANSWER_BYTES);
    }

    proptest! {
        #[test]
        fn checks_never_panic(answer in ".{0,200}") {
            let _ = Expect::regex("x+").unwrap().check(&answer);
            let _ = Expect::json_fields(&["a.b".into()]).unwrap().check(&answer);
        }
    }
}
