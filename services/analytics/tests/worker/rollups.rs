//! What the rollups say after a batch: hours, dimensions, unique visitors, `links.clicks`.

use chrono::{DurationRound, TimeDelta, Utc};
use kurz_repository::clicks::ClickEvent;
use kurz_repository::{LinkRepository, Owner};
use kurz_testkit::TestEnv;

use crate::*;

#[tokio::test]
async fn clicks_are_split_into_humans_and_bots_per_hour_and_counted_per_dimension() {
    let env = TestEnv::start().await;
    let owner = env
        .repository()
        .create_account("acme")
        .await
        .expect("account")
        .id;
    let id = link(&env, "promo", Some(owner)).await;
    let mut worker = worker(&env, "w1").await;
    let events = [
        ClickEvent {
            at: at("2026-03-01T10:15:00Z"),
            referrer: Some("https://News.Example/item?id=1".to_owned()),
            ..click("promo")
        },
        ClickEvent {
            at: at("2026-03-01T10:45:00Z"),
            referrer: Some("https://news.example/other".to_owned()),
            ..click("promo")
        },
        ClickEvent {
            at: at("2026-03-01T10:30:00Z"),
            user_agent: Some(GOOGLEBOT.to_owned()),
            ..click("promo")
        },
        ClickEvent {
            at: at("2026-03-01T11:05:00Z"),
            user_agent: Some(SAFARI_IPHONE.to_owned()),
            ..click("promo")
        },
    ];
    // Two entries of two clicks, one on each shard: each shard is its own run.
    add_batch(&env, 0, &events[..2]).await;
    add_batch(&env, 1, &events[2..]).await;

    let outcome = drain(&mut worker).await;

    assert_eq!((outcome.read, outcome.applied), (2, 4));
    assert_eq!(
        hourly(&env, id).await,
        [
            (at("2026-03-01T10:00:00Z"), 2, 1, 0, 0),
            (at("2026-03-01T11:00:00Z"), 1, 0, 0, 0),
        ]
    );
    assert_eq!(clicks(&env, id).await, 3, "links.clicks counts humans only");
    assert_eq!(
        daily(&env, id, "referrer").await,
        values(&[("(direct)", 1, 1), ("news.example", 2, 0)])
    );
    assert_eq!(
        daily(&env, id, "browser").await,
        values(&[("Chrome", 2, 0), ("Googlebot", 0, 1), ("Safari", 1, 0)])
    );
    assert_eq!(
        daily(&env, id, "os").await,
        values(&[("(unknown)", 0, 1), ("Windows", 2, 0), ("iOS", 1, 0)])
    );
    assert_eq!(
        daily(&env, id, "device").await,
        values(&[("bot", 0, 1), ("desktop", 2, 0), ("mobile", 1, 0)])
    );
    assert_eq!(
        daily(&env, id, "country").await,
        values(&[("(unknown)", 3, 1)])
    );
    let owners: i64 = query_one(
        &env,
        "SELECT count(*) FROM click_daily WHERE owner_id = $1",
        &[&owner],
    )
    .await;
    let rows: i64 = query_one(&env, "SELECT count(*) FROM click_daily", &[]).await;
    assert_eq!(owners, rows, "every rollup row carries the link's owner");
    assert_eq!(pending_everywhere(&env).await, 0);
}

#[tokio::test]
async fn a_visitor_is_unique_once_a_day_in_the_hour_of_its_first_click() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    let mut worker = worker(&env, "w1").await;
    let today = Utc::now()
        .duration_trunc(TimeDelta::days(1))
        .expect("a day");
    let (first_hour, second_hour) = (today, today + TimeDelta::hours(1));
    let person = Some([1u8; 16]);
    let crawler = Some([2u8; 16]);
    let visit = |at, visitor, agent: &str| ClickEvent {
        at,
        visitor,
        user_agent: Some(agent.to_owned()),
        ..click("promo")
    };
    add(
        &env,
        0,
        &visit(first_hour + TimeDelta::minutes(10), person, CHROME_WINDOWS),
    )
    .await;
    add(
        &env,
        1,
        &visit(first_hour + TimeDelta::minutes(20), person, CHROME_WINDOWS),
    )
    .await;
    add(
        &env,
        0,
        &visit(first_hour + TimeDelta::minutes(30), crawler, GOOGLEBOT),
    )
    .await;
    // No hash (DNT): a click, never a unique visitor.
    add(
        &env,
        0,
        &visit(first_hour + TimeDelta::minutes(40), None, CHROME_WINDOWS),
    )
    .await;
    drain(&mut worker).await;
    // The same person in a later batch and hour: not new today.
    add(
        &env,
        1,
        &visit(second_hour + TimeDelta::minutes(5), person, CHROME_WINDOWS),
    )
    .await;
    // Two days ago: its hashes are no longer kept, so it counts as a click only.
    let old = today - TimeDelta::days(2);
    add(&env, 0, &visit(old, Some([3u8; 16]), CHROME_WINDOWS)).await;
    drain(&mut worker).await;

    assert_eq!(
        hourly(&env, id).await,
        [
            (old, 1, 0, 0, 0),
            (first_hour, 3, 1, 1, 1),
            (second_hour, 1, 0, 0, 0),
        ]
    );
    assert_eq!(clicks(&env, id).await, 5);
}

#[tokio::test]
async fn entries_that_are_not_clicks_or_name_no_link_are_acknowledged_and_dropped() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    let mut worker = worker(&env, "w1").await;
    // No clicks field, and one that is not postcard.
    add_fields(
        &env,
        0,
        &[("c", b"promo".to_vec()), ("t", b"1764600000000".to_vec())],
    )
    .await;
    add_fields(&env, 0, &[("n", b"1".to_vec()), ("e1", vec![0xff; 9])]).await;
    add_batch(&env, 1, &[click("nosuchcode"), click("promo")]).await;

    let outcome = drain(&mut worker).await;

    assert_eq!(
        (outcome.invalid, outcome.unknown_link, outcome.applied),
        (2, 1, 1)
    );
    assert_eq!(clicks(&env, id).await, 1);
    assert_eq!(
        pending_everywhere(&env).await,
        0,
        "all three entries are acknowledged"
    );
}

#[tokio::test]
async fn a_deleted_link_still_gets_the_clicks_it_had() {
    let env = TestEnv::start().await;
    let id = link(&env, "gone", None).await;
    let mut worker = worker(&env, "w1").await;
    add(&env, 0, &click("gone")).await;
    env.repository()
        .delete("gone", Owner::Any)
        .await
        .expect("deleted");

    let outcome = drain(&mut worker).await;

    assert_eq!(outcome.applied, 1);
    assert_eq!(clicks(&env, id).await, 1);
}

#[tokio::test]
async fn housekeeping_deletes_old_visitor_hashes_and_ranges_nothing_can_ask_about() {
    let env = TestEnv::start().await;
    let id = link(&env, "promo", None).await;
    let mut worker = worker(&env, "w1").await;
    let today = Utc::now().date_naive();
    env.sql()
        .await
        .execute(
            "INSERT INTO click_visitors (link_id, day, visitor) VALUES \
             ($1, $2::date - 2, '\\x00000000000000000000000000000001'), \
             ($1, $2::date - 1, '\\x00000000000000000000000000000002')",
            &[&id, &today],
        )
        .await
        .expect("arrange");
    add(&env, 0, &click("promo")).await;
    drain(&mut worker).await;
    // A second batch, applied but not acknowledged: its range must stay.
    add(&env, 0, &click("promo")).await;
    worker.process_once_without_ack().await.expect("a step");

    let done = worker.housekeep(Utc::now()).await.expect("housekeeping");

    assert_eq!(done.visitors, 1, "only the day before yesterday goes");
    assert_eq!(done.ranges, 1, "the acknowledged batch's range goes");
    let left: i64 = query_one(&env, "SELECT count(*) FROM click_applied", &[]).await;
    assert_eq!(left, 1, "the pending batch's range stays");
    let visitors: i64 = query_one(&env, "SELECT count(*) FROM click_visitors", &[]).await;
    assert_eq!(visitors, 1);
}
