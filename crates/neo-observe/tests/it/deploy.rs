//! deploy/: the alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), and every query of the rules and of the Grafana dashboard names
//! catalogued metrics only.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's `prometheus` package \
                 (apt-get install prometheus; scripts/lib.sh ensure_servers_installed does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 13 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_a_unit_test() {
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy().join("prometheus/alerts_test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 13);
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no unit test in alerts_test.yml"
        );
    }
}

/// The `neo_…` identifiers in a query, each checked against the catalogue (a histogram's
/// `_bucket`, `_sum` and `_count` series count as the histogram).
fn check_query(query: &str, at: &str) -> usize {
    let catalogue = neo_observe::catalogue::all();
    let mut found = 0;
    let bytes = query.as_bytes();
    let mut i = 0;
    while let Some(pos) = query[i..].find("neo_") {
        let start = i + pos;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = query[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(query.len(), |n| start + n);
        i = end;
        if !before_ok {
            continue;
        }
        let name = &query[start..end];
        let known = catalogue.iter().any(|d| {
            d.name == name
                || (d.kind == neo_core::MetricKind::Histogram
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(d.name)))
        });
        assert!(
            known,
            "{at}: {name} is not a catalogued metric (in {query})"
        );
        found += 1;
    }
    found
}

fn panels(value: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    for panel in value["panels"].as_array().into_iter().flatten() {
        out.push(panel.clone());
        panels(panel, out);
    }
}

#[test]
fn every_dashboard_query_names_catalogued_metrics() {
    let text = std::fs::read_to_string(deploy().join("grafana/neo-commons.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut all = Vec::new();
    panels(&dashboard, &mut all);
    let mut queries = 0;
    for panel in all.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                check_query(expr, title) >= 1,
                "panel {title}: {expr} names no metric"
            );
            queries += 1;
        }
    }
    assert!(queries >= 30, "{queries} queries");
}

#[test]
fn every_alert_query_names_catalogued_metrics() {
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    assert!(check_query(&rules, "alerts.yml") >= 20);
}
