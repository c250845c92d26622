//! A strict parser of Prometheus' text exposition format (0.0.4), for tests that scrape a
//! `/metrics` route: every line must be a `# HELP`, a `# TYPE`, another comment, blank, or a
//! well-formed sample of a family whose `# TYPE` came first.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpositionSample {
    /// The sample's name (`x_bucket`, `x_sum`, `x_count` for histogram parts).
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// One metric family: its type, help and samples.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Family {
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub kind: String,
    /// The `# HELP` text, when given.
    pub help: Option<String>,
    /// Its samples.
    pub samples: Vec<ExpositionSample>,
}

/// Parses `text`; families by name. An error names the line and what is wrong with it.
///
/// # Errors
/// A line that is not valid exposition format, a `# TYPE` given twice or after the family's
/// samples, a sample of a family without a `# TYPE`, a histogram bucket without `le`.
pub fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without a type"))?;
            check_name(name).map_err(|e| at(&e))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at("unknown type"));
            }
            let family = families.entry(name.to_owned()).or_default();
            if !family.kind.is_empty() || !family.samples.is_empty() {
                return Err(at("TYPE given twice or after the samples"));
            }
            family.kind = kind.to_owned();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            check_name(name).map_err(|e| at(&e))?;
            families.entry(name.to_owned()).or_default().help = Some(help.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(|e| at(&e))?;
        let family_name = [("_bucket", "histogram"), ("_sum", ""), ("_count", "")]
            .iter()
            .find_map(|(suffix, _)| {
                let base = sample.name.strip_suffix(suffix)?;
                let kind = families.get(base).map(|f| f.kind.as_str());
                matches!(kind, Some("histogram" | "summary")).then(|| base.to_owned())
            })
            .unwrap_or_else(|| sample.name.clone());
        let family = families
            .get_mut(&family_name)
            .filter(|f| !f.kind.is_empty())
            .ok_or_else(|| at("a sample of a family without a TYPE line before it"))?;
        if family.kind == "histogram"
            && sample.name.ends_with("_bucket")
            && !sample.labels.iter().any(|(k, _)| k == "le")
        {
            return Err(at("a histogram bucket without le"));
        }
        family.samples.push(sample);
    }
    Ok(families)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("bad label name {name:?}"))
    }
}

fn parse_sample(line: &str) -> Result<ExpositionSample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut consumed = None;
        loop {
            let start = match chars.peek() {
                Some((_, '}')) => {
                    consumed = chars.next().map(|(i, _)| i + 1);
                    break;
                }
                Some((i, _)) => *i,
                None => break,
            };
            let eq = body[start..].find('=').ok_or("a label without =")? + start;
            let key = &body[start..eq];
            check_label_name(key)?;
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("a label value not in quotes".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        _ => return Err("a bad escape in a label value".into()),
                    },
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err("an unterminated label value".into()),
                }
            }
            labels.push((key.to_owned(), value));
            match chars.peek().map(|(_, c)| *c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                _ => return Err("labels not separated by commas".into()),
            }
        }
        let end = consumed.ok_or("labels without a closing brace")?;
        rest = &body[end..];
    }
    let mut parts = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = match parts.next().ok_or("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("a bad value {v:?}"))?,
    };
    if let Some(timestamp) = parts.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("a bad timestamp {timestamp:?}"))?;
    }
    if parts.next().is_some() {
        return Err("extra fields after the timestamp".into());
    }
    Ok(ExpositionSample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_well_formed_exposition() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                    # TYPE h_seconds histogram\nh_seconds_bucket{le=\"0.5\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n\
                    h_seconds_sum 0.7\nh_seconds_count 2\n# TYPE g gauge\ng 1.5 1700000000000\n";
        let families = parse_exposition(text).unwrap();
        assert_eq!(families["a_total"].help.as_deref(), Some("Things."));
        assert_eq!(
            families["a_total"].samples[0].labels,
            vec![("x".into(), "1".into()), ("y".into(), "q\"".into())]
        );
        assert_eq!(families["h_seconds"].samples.len(), 4);
        assert_eq!(families["g"].samples[0].value, 1.5);
    }

    #[test]
    fn refuses_what_is_malformed() {
        for bad in [
            "a 1\n",                                 // no TYPE
            "# TYPE a gauge\na{x=1} 1\n",            // unquoted label value
            "# TYPE a gauge\na{x=\"1\" 1\n",         // no closing brace
            "# TYPE a gauge\na one\n",               // bad value
            "# TYPE a gauge\n# TYPE a gauge\n",      // TYPE twice
            "# TYPE 1a gauge\n",                     // bad name
            "# TYPE h histogram\nh_bucket 1\n",      // bucket without le
            "# TYPE a gauge\na{x=\"1\"y=\"2\"} 1\n", // no comma
            "# TYPE a gauge\na 1 2 3\n",             // extra field
            "# TYPE a wibble\n",                     // unknown type
        ] {
            assert!(parse_exposition(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
