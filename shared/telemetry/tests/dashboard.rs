//! The Grafana dashboard in infra/observability only queries metrics Kurz exports.
//!
//! The names come from `kurz_telemetry::metrics::ALL`; the services' own metrics tests check
//! that they really appear on `/metrics`.

use std::collections::BTreeSet;
use std::path::Path;

use kurz_telemetry::metrics::all_names;
use serde_json::Value;

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../infra/observability/grafana/dashboards/kurz.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every Prometheus query of the dashboard (`expr` of the targets), with its panel's title.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("untitled").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                found.push((title.clone(), expr.to_owned()));
            }
        }
    }
    found
}

/// The metric families an expression names: `kurz_*` identifiers, histogram suffixes removed.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("kurz_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_dashboard_query_names_only_exported_metrics() {
    let dashboard = dashboard();
    let exported: BTreeSet<&str> = all_names().collect();
    let queries = queries(&dashboard);
    assert!(
        queries.len() >= 10,
        "the dashboard has its queries: {queries:?}"
    );
    for (panel, expr) in &queries {
        let named = metrics_in(expr);
        assert!(
            !named.is_empty(),
            "panel `{panel}` queries no Kurz metric: {expr}"
        );
        for name in named {
            assert!(
                exported.contains(name.as_str()),
                "panel `{panel}` queries `{name}`, which Kurz does not export: {expr}"
            );
        }
    }
}

#[test]
fn every_exported_metric_is_on_the_dashboard() {
    let dashboard = dashboard();
    let used: BTreeSet<String> = queries(&dashboard)
        .iter()
        .flat_map(|(_, expr)| metrics_in(expr))
        .collect();
    for name in all_names() {
        assert!(used.contains(name), "no panel shows `{name}`");
    }
}

#[test]
fn panels_use_the_provisioned_datasources() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "kurz-overview");
    for panel in dashboard["panels"].as_array().expect("panels") {
        if let Some(uid) = panel["datasource"]["uid"].as_str() {
            assert!(
                ["prometheus", "tempo", "$datasource"].contains(&uid),
                "panel `{}` uses an unknown datasource `{uid}`",
                panel["title"]
            );
        }
    }
}

#[test]
fn the_metric_scanner_strips_histogram_suffixes() {
    let names = metrics_in(
        "histogram_quantile(0.99, sum by (le) (rate(kurz_db_pool_wait_seconds_bucket[5m]))) / kurz_x_total",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["kurz_db_pool_wait_seconds", "kurz_x_total"]
    );
}
