//! Code, catalogue and docs/METRICS.md agree: by scanning the sources for every emitting
//! macro, and by reading the document's table.

use neo_core::{MetricDef, MetricKind};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn catalogue() -> BTreeMap<&'static str, MetricDef> {
    let all = neo_observe::catalogue::all();
    let map: BTreeMap<_, _> = all.iter().map(|d| (d.name, *d)).collect();
    assert_eq!(map.len(), all.len(), "a name is catalogued twice");
    map
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `pub const IDENT: &str = "name";` of one crate's metric_names.rs.
fn constants(krate: &str) -> BTreeMap<String, String> {
    let path = workspace()
        .join("crates")
        .join(krate)
        .join("src/metric_names.rs");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for chunk in text.split("pub const ").skip(1) {
        let Some((ident, rest)) = chunk.split_once(':') else {
            continue;
        };
        let rest = rest.trim_start();
        if !rest.starts_with("&str") {
            continue;
        }
        let value = rest.split('"').nth(1).unwrap();
        out.insert(ident.trim().to_owned(), value.to_owned());
    }
    out
}

/// One emitting macro call found in the sources.
#[derive(Debug)]
struct Emission {
    at: String,
    kind: MetricKind,
    name: String,
    labels: BTreeSet<String>,
}

/// Every `metrics::{counter,gauge,histogram}!(…)` in `crates/*/src`, its first argument
/// resolved through the crates' name constants (own crate first, else the one crate that
/// defines that constant).
fn emissions() -> Vec<Emission> {
    let crates_dir = workspace().join("crates");
    let mut crates: Vec<String> = std::fs::read_dir(&crates_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    crates.sort();
    let consts: BTreeMap<String, BTreeMap<String, String>> =
        crates.iter().map(|c| (c.clone(), constants(c))).collect();
    let mut found = Vec::new();
    for krate in &crates {
        let mut files = Vec::new();
        rust_files(&crates_dir.join(krate).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (macro_name, kind) in [
                ("counter!(", MetricKind::Counter),
                ("gauge!(", MetricKind::Gauge),
                ("histogram!(", MetricKind::Histogram),
            ] {
                let needle = format!("metrics::{macro_name}");
                let mut from = 0;
                while let Some(pos) = text[from..].find(&needle) {
                    let start = from + pos + needle.len();
                    let end = closing_paren(&text, start);
                    let args = &text[start..end];
                    from = end;
                    let at = format!("{}:{}", file.display(), text[..start].lines().count());
                    let first = args.split(',').next().unwrap().trim();
                    assert!(
                        !first.starts_with('"'),
                        "{at}: a metric named by a string literal ({first}); use a metric_names constant"
                    );
                    let ident = first.rsplit("::").next().unwrap();
                    let name = consts[krate].get(ident).cloned().or_else(|| {
                        let defs: Vec<_> = consts.values().filter_map(|m| m.get(ident)).collect();
                        assert!(defs.len() <= 1, "{at}: {ident} is ambiguous across crates");
                        defs.first().map(|s| (*s).clone())
                    });
                    let name = name.unwrap_or_else(|| {
                        panic!("{at}: {first} is not a constant of any metric_names module")
                    });
                    let parts: Vec<&str> = args.split("=>").collect();
                    let labels = parts[..parts.len() - 1]
                        .iter()
                        .map(|before| {
                            before
                                .rsplit(',')
                                .next()
                                .unwrap()
                                .trim()
                                .trim_matches('"')
                                .to_owned()
                        })
                        .collect();
                    found.push(Emission {
                        at,
                        kind,
                        name,
                        labels,
                    });
                }
            }
        }
    }
    found
}

fn closing_paren(text: &str, start: usize) -> usize {
    let mut depth = 1;
    for (i, c) in text[start..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return start + i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced macro call");
}

#[test]
fn every_emitted_metric_is_catalogued_with_its_kind_and_labels() {
    let catalogue = catalogue();
    let emissions = emissions();
    assert!(
        emissions.len() > 50,
        "the scan found only {} calls",
        emissions.len()
    );
    for e in &emissions {
        let def = catalogue
            .get(e.name.as_str())
            .unwrap_or_else(|| panic!("{}: {} is emitted but not catalogued", e.at, e.name));
        assert_eq!(
            def.kind, e.kind,
            "{}: {} emitted as another kind",
            e.at, e.name
        );
        let labels: BTreeSet<String> = def.labels.iter().map(|l| (*l).to_owned()).collect();
        assert_eq!(
            labels, e.labels,
            "{}: {} emitted with other labels",
            e.at, e.name
        );
    }
}

#[test]
fn every_catalogued_metric_is_emitted_somewhere() {
    let emitted: BTreeSet<String> = emissions().into_iter().map(|e| e.name).collect();
    let catalogue = catalogue();
    let never: Vec<_> = catalogue
        .keys()
        .filter(|name| !emitted.contains(**name))
        .collect();
    assert!(never.is_empty(), "catalogued but never emitted: {never:?}");
}

#[test]
fn names_follow_the_convention() {
    for def in catalogue().values() {
        let rest = def
            .name
            .strip_prefix("neo_")
            .expect("names start with neo_");
        let krate = rest.split('_').next().unwrap();
        assert!(
            [
                "db",
                "cache",
                "resilience",
                "batch",
                "queue",
                "coord",
                "events",
                "observe"
            ]
            .contains(&krate),
            "{}: the second part names the crate",
            def.name
        );
        match def.kind {
            MetricKind::Counter => assert!(def.name.ends_with("_total"), "{}", def.name),
            _ => assert!(
                def.name.ends_with(&format!("_{}", def.unit))
                    || (def.unit == "boolean" && def.name.ends_with("_leader")),
                "{}: a gauge or histogram ends with its unit {}",
                def.name,
                def.unit
            ),
        }
        for label in def.labels {
            assert!(
                !["tenant", "tenant_id", "key", "user", "url"].contains(label),
                "{}: label {label} is unbounded",
                def.name
            );
        }
    }
}

#[test]
fn docs_metrics_md_lists_the_catalogue() {
    let text = std::fs::read_to_string(workspace().join("docs/METRICS.md")).unwrap();
    let mut documented = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `neo_")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].trim_matches('`').to_owned();
        let labels: Vec<String> = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty() && l != "—")
            .collect();
        let row = (cells[1].to_owned(), cells[2].to_owned(), labels);
        assert!(
            documented.insert(name.clone(), row).is_none(),
            "{name} documented twice"
        );
    }
    let expected: BTreeMap<String, (String, String, Vec<String>)> = catalogue()
        .values()
        .map(|d| {
            let labels = d.labels.iter().map(|l| (*l).to_owned()).collect();
            (
                d.name.to_owned(),
                (d.kind.as_str().to_owned(), d.unit.to_owned(), labels),
            )
        })
        .collect();
    assert_eq!(
        documented, expected,
        "docs/METRICS.md differs from the catalogue"
    );
}
