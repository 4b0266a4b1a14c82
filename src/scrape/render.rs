//! Writes families and samples in the Prometheus text format 0.0.4, as client libraries do:
//! `# HELP` and `# TYPE` before each family's samples, names and values escaped, floats in
//! Go's shortest form.

use super::lex::write_go_float;
use super::{FamilyType, ParsedFamily, ParsedSample};
use crate::series::METRIC_NAME_LABEL;

/// Renders samples grouped by family, in family order, in the text format 0.0.4.
///
/// Families without samples still get their metadata lines. A family without type and help
/// gets no metadata lines at all, so it parses back as the same implicit family. OpenMetrics-only
/// types (info, stateset, gauge histogram) are written as `untyped`, the text format having
/// no such types. Negative timestamps are written as given, though Prometheus refuses them.
pub fn render_text(families: &[ParsedFamily], samples: &[ParsedSample]) -> String {
    let mut out = String::with_capacity(samples.len() * 64);
    render_text_into(&mut out, families, samples);
    out
}

/// Like [`render_text`], appending to `out`.
pub fn render_text_into(out: &mut String, families: &[ParsedFamily], samples: &[ParsedSample]) {
    let mut by_family: Vec<Vec<&ParsedSample>> = vec![Vec::new(); families.len()];
    let mut orphans = Vec::new();
    for s in samples {
        match by_family.get_mut(s.family) {
            Some(v) => v.push(s),
            None => orphans.push(s),
        }
    }
    for (family, samples) in families.iter().zip(&by_family) {
        if let Some(help) = &family.help {
            out.push_str("# HELP ");
            out.push_str(&family.name);
            out.push(' ');
            escape_into(out, help, false);
            out.push('\n');
        }
        let kind = match family.kind {
            FamilyType::Counter => Some("counter"),
            FamilyType::Gauge => Some("gauge"),
            FamilyType::Histogram => Some("histogram"),
            FamilyType::Summary => Some("summary"),
            FamilyType::GaugeHistogram | FamilyType::Info | FamilyType::StateSet => Some("untyped"),
            FamilyType::Unknown => None,
        };
        if let Some(kind) = kind {
            out.push_str("# TYPE ");
            out.push_str(&family.name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
        }
        for s in samples {
            sample_line(out, s);
        }
    }
    for s in orphans {
        sample_line(out, s);
    }
}

fn sample_line(out: &mut String, s: &ParsedSample) {
    out.push_str(s.labels.metric_name());
    let mut first = true;
    for l in s.labels.iter().filter(|l| l.name != METRIC_NAME_LABEL) {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(l.name);
        out.push_str("=\"");
        escape_into(out, l.value, true);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    write_go_float(out, s.value);
    if let Some(ts) = s.timestamp_ms {
        out.push(' ');
        out.push_str(&ts.to_string());
    }
    out.push('\n');
}

/// Escapes `\` and newline, and `"` too in label values.
fn escape_into(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}
