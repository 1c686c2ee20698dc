//! Countries from `KURZ_GEOIP_DB`, and a worker that refuses a database it cannot read.

use kurz_analytics::{Settings, Worker};
use kurz_repository::clicks::ClickEvent;
use kurz_testkit::TestEnv;
use kurz_testkit::geoip::{CountryDb, Layout};

use crate::*;

const NETWORKS: &[(&str, &str)] = &[("203.0.113.0/24", "DE"), ("2001:db8::/32", "JP")];

/// Clicks on `code` from Germany, Japan and an address the database does not know.
async fn clicks_from_three_places(env: &TestEnv, code: &str) {
    for ip in ["203.0.113.0", "2001:db8:abcd::", "198.51.100.0"] {
        let event = ClickEvent {
            ip_prefix: Some(ip.parse().expect("an address")),
            ..click(code)
        };
        add(env, 0, &event).await;
    }
}

#[tokio::test]
async fn countries_come_from_the_database_in_either_layout() {
    let env = TestEnv::start().await;
    for (n, layout) in [Layout::GeoIp2, Layout::CountryCode]
        .into_iter()
        .enumerate()
    {
        let code = format!("promo{n}");
        let id = link(&env, &code, None).await;
        let db = CountryDb::with_layout(layout, NETWORKS);
        let source =
            source(&env, &format!("w{n}")).with("KURZ_GEOIP_DB", db.path().display().to_string());
        let mut worker = worker_from(source).await;
        clicks_from_three_places(&env, &code).await;

        drain(&mut worker).await;

        assert_eq!(
            daily(&env, id, "country").await,
            values(&[("(unknown)", 1, 0), ("DE", 1, 0), ("JP", 1, 0)]),
            "{layout:?}"
        );
    }
}

#[tokio::test]
async fn without_a_database_every_country_is_unknown() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    let mut worker = worker(&env, "w1").await;
    clicks_from_three_places(&env, "promo").await;

    drain(&mut worker).await;

    assert_eq!(
        daily(&env, id, "country").await,
        values(&[("(unknown)", 3, 0)])
    );
}

#[tokio::test]
async fn a_database_that_cannot_be_read_stops_the_worker_naming_the_variable() {
    let env = TestEnv::start().await;
    let garbage = tempfile_with(b"not a MaxMind database");
    for path in [
        "/nonexistent/country.mmdb".to_owned(),
        garbage.path().display().to_string(),
    ] {
        let source = source(&env, "w1").with("KURZ_GEOIP_DB", path.clone());
        let settings = Settings::from_source(&source).expect("valid settings");

        let err = Worker::build(&settings).await.expect_err("refused");

        assert!(err.to_string().contains("KURZ_GEOIP_DB"), "{path}: {err}");
    }
}

fn tempfile_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(file.path(), bytes).expect("written");
    file
}
