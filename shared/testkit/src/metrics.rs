//! Reading a Prometheus text exposition in assertions.

/// The exposition of `GET {base}/metrics`; panics unless it is a 200 in the text format.
pub async fn scrape(base: &str) -> Exposition {
    let response = crate::http_client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200, "GET {base}/metrics");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain"),
        "the exposition format is text/plain, got {content_type}"
    );
    Exposition(response.text().await.expect("metrics body"))
}

/// A scraped exposition.
#[derive(Debug, Clone)]
pub struct Exposition(pub String);

impl Exposition {
    /// Whether any series of this metric family is present (histograms through `_bucket`,
    /// `_sum` or `_count`).
    pub fn has(&self, name: &str) -> bool {
        self.samples().any(|(series, _)| {
            let family = series.split('{').next().unwrap_or_default();
            family == name
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| family.strip_suffix(suffix) == Some(name))
        })
    }

    /// Panics, showing the exposition, unless every one of `names` is present.
    pub fn assert_has_all(&self, names: &[&str]) {
        for name in names {
            assert!(self.has(name), "{name} is missing from:\n{}", self.0);
        }
    }

    /// The sum of every series of `name` whose labels include all of `labels`
    /// (`("status", "302")`, ...). 0 when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples()
            .filter(|(series, _)| {
                let (family, rest) = series.split_once('{').unwrap_or((series, ""));
                family == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, value)| value)
            .sum()
    }

    fn samples(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series, value.parse().ok()?))
            })
    }
}
