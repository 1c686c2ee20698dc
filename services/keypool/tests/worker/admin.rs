//! `kurz-keypool accounts` and `kurz-keypool api-keys`, run as an operator runs them.

use std::process::Output;

use deadpool_redis::redis;
use futures_util::StreamExt;
use kurz_repository::Scope;
use kurz_repository::token::verify_format;
use kurz_testkit::TestEnv;

/// Runs the binary with this env's database and Redis, without a terminal.
async fn run(env: &TestEnv, args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kurz-keypool"))
        .args(args)
        .envs(env.database_vars())
        .env("KURZ_REDIS_URL", env.redis_url())
        .env("KURZ_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("kurz-keypool runs");
    assert!(
        output.status.success(),
        "kurz-keypool {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

#[tokio::test]
async fn the_first_admin_key_is_made_on_the_command_line_and_works() {
    let env = TestEnv::start().await;

    let id = stdout(&run(&env, &["accounts", "create", "ops"]).await);
    let again = stdout(&run(&env, &["accounts", "create", "ops", "--exists-ok"]).await);
    let minted = run(
        &env,
        &[
            "api-keys",
            "create",
            "--account",
            "ops",
            "--name",
            "bootstrap",
            "--scope",
            "admin",
        ],
    )
    .await;

    assert_eq!(id, again, "--exists-ok finds the same account");
    let key = stdout(&minted).trim().to_owned();
    let digest = verify_format(&key).expect("a well-formed key, alone on stdout");
    let credential = env
        .repository()
        .credential(&digest)
        .await
        .expect("lookup")
        .expect("stored by its digest");
    assert_eq!(credential.account.name, "ops");
    assert_eq!(credential.key.scopes, [Scope::Admin]);
    let listed = stdout(&run(&env, &["api-keys", "list"]).await);
    assert!(listed.contains("bootstrap") && listed.contains(&credential.key.hint));
    assert!(!listed.contains(&key[5..]), "the list never shows the key");
}

#[tokio::test]
async fn revoking_and_disabling_on_the_command_line_are_announced_to_running_services() {
    let env = TestEnv::start().await;
    let key = env.api_key("acme", &[Scope::LinksWrite], None).await;
    let client = redis::Client::open(env.redis_url()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub
        .subscribe(kurz_repository::invalidation::AUTH_CHANNEL)
        .await
        .expect("subscribe");

    run(&env, &["api-keys", "revoke", &key.key_id.to_string()]).await;
    run(&env, &["accounts", "disable", "acme"]).await;

    let mut messages = pubsub.into_on_message();
    let mut payloads = Vec::new();
    for _ in 0..2 {
        let message = messages.next().await.expect("a message");
        payloads.push(message.get_payload::<String>().expect("text"));
    }
    assert_eq!(
        payloads,
        [
            format!("key:{}", key.key_id),
            format!("account:{}", key.account_id)
        ]
    );
    let sql = env.sql().await;
    let revoked: bool = sql
        .query_one(
            "SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1",
            &[&key.key_id],
        )
        .await
        .expect("query")
        .get(0);
    let disabled: bool = sql
        .query_one(
            "SELECT disabled_at IS NOT NULL FROM accounts WHERE id = $1",
            &[&key.account_id],
        )
        .await
        .expect("query")
        .get(0);
    assert!(revoked && disabled);
}
