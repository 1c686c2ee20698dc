//! What each worker sends next, and what each scenario counts as the expected answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hyper::StatusCode;
use hyper::http::uri::PathAndQuery;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::cli::Scenario;
use crate::codes::random_code;
use crate::zipf::ZipfRanks;

/// Path of the create API.
pub const CREATE_PATH: &str = "/api/v1/links";
/// Path of the create API's bulk endpoint.
pub const BULK_PATH: &str = "/api/v1/links/bulk";

/// Share of creates in `mixed`: links are read far more often than written.
pub const MIXED_CREATE_SHARE: f64 = 0.05;

/// The two kinds of request, which go to different targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redirect,
    Create,
}

/// The next request a worker should send.
#[derive(Debug)]
pub enum Planned {
    /// GET this path on the redirect target.
    Redirect(PathAndQuery),
    /// POST this JSON body to the create API.
    Create(Bytes),
    /// POST this JSON body to the create API's bulk endpoint.
    Bulk(Bytes),
}

/// The status a request of some kind should get in some scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Any 3xx: the redirect service answers 302 today; 301/307/308 would be as good for load.
    Redirect,
    /// The code does not exist.
    NotFound,
    /// The link was created.
    Created,
    /// A bulk call was answered (each item has its own status in the body).
    Answered,
}

impl Expected {
    pub fn for_request(scenario: Scenario, kind: Kind) -> Self {
        match (scenario, kind) {
            (Scenario::Bulk, Kind::Create) => Self::Answered,
            (_, Kind::Create) => Self::Created,
            (Scenario::RedirectMiss, Kind::Redirect) => Self::NotFound,
            (_, Kind::Redirect) => Self::Redirect,
        }
    }

    pub fn matches(self, status: StatusCode) -> bool {
        match self {
            Self::Redirect => status.is_redirection(),
            Self::NotFound => status == StatusCode::NOT_FOUND,
            Self::Created => status == StatusCode::CREATED,
            Self::Answered => status == StatusCode::OK,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Redirect => "3xx",
            Self::NotFound => "404",
            Self::Created => "201",
            Self::Answered => "200",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "scenario {} needs a code list: pass --codes FILE (see `kurz-load seed`)",
        crate::report::scenario_name(*.0)
    )]
    NoCodes(Scenario),
    #[error("the code list is empty")]
    EmptyCodes,
    #[error("Zipf parameters: {0}")]
    Zipf(#[from] rand_distr::ZipfError),
}

/// Everything the workers share to plan requests; cheap to clone.
#[derive(Debug, Clone)]
pub struct Workload {
    scenario: Scenario,
    /// `/{code}` for every code in the list, built once so that planning a request allocates
    /// nothing but a reference count.
    paths: Arc<[PathAndQuery]>,
    hot: Option<ZipfRanks>,
    run_id: Arc<str>,
    created: Arc<AtomicU64>,
    /// Links per bulk request.
    bulk_items: u32,
}

impl Workload {
    /// `codes` must already be checked (see [`crate::codes::parse_codes`]).
    pub fn new(
        scenario: Scenario,
        codes: &[String],
        hot_codes: u64,
        zipf_s: f64,
        run_id: &str,
    ) -> Result<Self, WorkloadError> {
        let paths: Arc<[PathAndQuery]> = if scenario.needs_codes() {
            if codes.is_empty() {
                return Err(WorkloadError::EmptyCodes);
            }
            codes.iter().map(|code| code_path(code)).collect()
        } else {
            Arc::from([])
        };
        let hot = match scenario {
            Scenario::RedirectHot | Scenario::Mixed => {
                let n = usize::try_from(hot_codes).unwrap_or(usize::MAX);
                Some(ZipfRanks::new(n.min(paths.len()), zipf_s)?)
            }
            _ => None,
        };
        Ok(Self {
            scenario,
            paths,
            hot,
            run_id: Arc::from(run_id),
            created: Arc::new(AtomicU64::new(0)),
            bulk_items: 1,
        })
    }

    /// Sets the links per request of the bulk scenario (1 by default).
    #[must_use]
    pub fn with_bulk_items(mut self, items: u32) -> Self {
        self.bulk_items = items.max(1);
        self
    }

    /// How many codes redirect-hot draws from (the list may be shorter than `--hot-codes`).
    pub fn hot_len(&self) -> usize {
        self.hot.map_or(0, |hot| hot.len())
    }

    /// A planner for one worker, with its own random stream.
    pub fn planner(&self, seed: u64) -> Planner {
        Planner {
            workload: self.clone(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

/// Plans one worker's requests.
#[derive(Debug)]
pub struct Planner {
    workload: Workload,
    rng: SmallRng,
}

impl Planner {
    pub fn plan(&mut self) -> Planned {
        let w = &self.workload;
        match w.scenario {
            Scenario::RedirectHot => Planned::Redirect(self.hot_path()),
            Scenario::RedirectUniform => {
                let index = self.rng.random_range(0..w.paths.len());
                Planned::Redirect(w.paths[index].clone())
            }
            Scenario::RedirectMiss => Planned::Redirect(code_path(&random_code(&mut self.rng))),
            Scenario::Create => Planned::Create(self.create_body()),
            Scenario::Bulk => Planned::Bulk(self.bulk_body()),
            Scenario::Mixed => {
                if self.rng.random_bool(MIXED_CREATE_SHARE) {
                    Planned::Create(self.create_body())
                } else {
                    Planned::Redirect(self.hot_path())
                }
            }
        }
    }

    fn hot_path(&mut self) -> PathAndQuery {
        let w = &self.workload;
        let index = w.hot.map_or(0, |hot| hot.sample(&mut self.rng));
        w.paths[index].clone()
    }

    fn create_body(&mut self) -> Bytes {
        let w = &self.workload;
        let n = w.created.fetch_add(1, Ordering::Relaxed);
        create_body(&format!("https://example.com/load/{}/{n}", w.run_id))
    }
}

impl Planner {
    fn bulk_body(&mut self) -> Bytes {
        let w = &self.workload;
        let items = u64::from(w.bulk_items);
        let first = w.created.fetch_add(items, Ordering::Relaxed);
        let urls: Vec<String> = (first..first + items)
            .map(|n| format!("https://example.com/load/{}/{n}", w.run_id))
            .collect();
        bulk_body(&urls)
    }
}

/// The JSON body of a bulk create of `urls`: `{"links": [{"url": ...}, ...]}`.
pub fn bulk_body(urls: &[String]) -> Bytes {
    #[derive(Serialize)]
    struct Item<'a> {
        url: &'a str,
    }
    #[derive(Serialize)]
    struct Bulk<'a> {
        links: Vec<Item<'a>>,
    }
    let links = urls.iter().map(|url| Item { url }).collect();
    Bytes::from(serde_json::to_vec(&Bulk { links }).unwrap_or_default())
}

/// The JSON body of a create request for `url`.
pub fn create_body(url: &str) -> Bytes {
    #[derive(Serialize)]
    struct NewLink<'a> {
        url: &'a str,
    }
    // Serialising a struct of one string cannot fail.
    Bytes::from(serde_json::to_vec(&NewLink { url }).unwrap_or_default())
}

/// `/{code}` as a request path. Codes are checked to be `[A-Za-z0-9_-]`, all valid in a path.
fn code_path(code: &str) -> PathAndQuery {
    PathAndQuery::from_maybe_shared(Bytes::from(format!("/{code}")))
        .unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("code{i:03}")).collect()
    }

    #[test]
    fn redirect_hot_draws_only_from_the_hot_codes() {
        let workload = Workload::new(Scenario::RedirectHot, &codes(100), 10, 1.0, "t")
            .expect("valid workload");
        let mut planner = workload.planner(1);
        for _ in 0..2_000 {
            let Planned::Redirect(path) = planner.plan() else {
                panic!("redirect-hot only redirects");
            };
            let n: usize = path.as_str()["/code".len()..].parse().expect("a number");
            assert!(n < 10, "{path}");
        }
    }

    #[test]
    fn redirect_uniform_reaches_the_whole_list() {
        let workload = Workload::new(Scenario::RedirectUniform, &codes(20), 10, 1.0, "t")
            .expect("valid workload");
        let mut planner = workload.planner(2);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            if let Planned::Redirect(path) = planner.plan() {
                seen.insert(path.as_str().to_owned());
            }
        }
        assert_eq!(seen.len(), 20);
    }

    #[test]
    fn creates_have_unique_urls_across_planners() {
        let workload =
            Workload::new(Scenario::Create, &[], 10, 1.0, "run1").expect("valid workload");
        let (mut a, mut b) = (workload.planner(1), workload.planner(2));
        let bodies: Vec<Bytes> = (0..3)
            .flat_map(|_| [a.plan(), b.plan()])
            .map(|p| match p {
                Planned::Create(body) => body,
                Planned::Redirect(_) | Planned::Bulk(_) => panic!("create only creates"),
            })
            .collect();
        let unique: std::collections::HashSet<_> = bodies.iter().collect();
        assert_eq!(unique.len(), 6);
        assert_eq!(
            bodies[0],
            Bytes::from_static(br#"{"url":"https://example.com/load/run1/0"}"#)
        );
    }

    #[test]
    fn bulk_bodies_carry_distinct_urls_and_expect_200() {
        let workload = Workload::new(Scenario::Bulk, &[], 10, 1.0, "b")
            .expect("valid workload")
            .with_bulk_items(3);
        let mut planner = workload.planner(1);
        let bodies: Vec<Bytes> = (0..2)
            .map(|_| match planner.plan() {
                Planned::Bulk(body) => body,
                other => panic!("bulk only sends bulk calls: {other:?}"),
            })
            .collect();
        assert_eq!(
            bodies[1],
            Bytes::from_static(
                br#"{"links":[{"url":"https://example.com/load/b/3"},{"url":"https://example.com/load/b/4"},{"url":"https://example.com/load/b/5"}]}"#
            )
        );
        let expected = Expected::for_request(Scenario::Bulk, Kind::Create);
        assert!(expected.matches(StatusCode::OK));
        assert!(!expected.matches(StatusCode::CREATED));
    }

    #[test]
    fn mixed_is_mostly_redirects() {
        let workload =
            Workload::new(Scenario::Mixed, &codes(50), 10, 1.0, "m").expect("valid workload");
        let mut planner = workload.planner(3);
        let creates = (0..20_000)
            .filter(|_| matches!(planner.plan(), Planned::Create(_)))
            .count();
        assert!(
            (800..1_200).contains(&creates),
            "{creates} creates in 20000"
        );
    }

    #[test]
    fn scenarios_needing_codes_refuse_an_empty_list() {
        let result = Workload::new(Scenario::RedirectHot, &[], 10, 1.0, "t");
        assert!(matches!(result, Err(WorkloadError::EmptyCodes)));
    }

    #[test]
    fn expectations_depend_on_scenario_and_kind() {
        let hot = Expected::for_request(Scenario::RedirectHot, Kind::Redirect);
        assert!(hot.matches(StatusCode::FOUND));
        assert!(!hot.matches(StatusCode::NOT_FOUND));
        let miss = Expected::for_request(Scenario::RedirectMiss, Kind::Redirect);
        assert!(miss.matches(StatusCode::NOT_FOUND));
        assert!(!miss.matches(StatusCode::FOUND));
        let create = Expected::for_request(Scenario::Mixed, Kind::Create);
        assert!(create.matches(StatusCode::CREATED));
        assert!(!create.matches(StatusCode::OK));
    }
}
