//! A real PgBouncer in transaction mode in front of a real PostgreSQL.

use kurz_servers::{PgBouncerServer, PostgresServer};
use tokio_postgres::NoTls;
use tokio_postgres::types::Type;

#[tokio::test]
async fn through_pgbouncer_in_transaction_mode_many_clients_run_unnamed_statements() {
    let postgres = PostgresServer::start().await;
    let bouncer = PgBouncerServer::start(postgres.port()).await;

    let mut clients = Vec::new();
    for n in 0..8_i64 {
        let url = bouncer.url("postgres");
        clients.push(tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&url, NoTls)
                .await
                .expect("a connection through PgBouncer");
            tokio::spawn(connection);
            for i in 0..50_i64 {
                let row = client
                    .query_typed_one("SELECT $1::int8 * 2", &[(&(n * 100 + i), Type::INT8)])
                    .await
                    .expect("an unnamed statement");
                assert_eq!(row.get::<_, i64>(0), (n * 100 + i) * 2);
            }
        }));
    }
    for client in clients {
        client.await.expect("a client");
    }

    // The pool is PgBouncer's: its admin console says transaction mode, for the database used.
    let (admin, connection) = tokio_postgres::connect(&bouncer.url("pgbouncer"), NoTls)
        .await
        .expect("the admin console");
    tokio::spawn(connection);
    let pools = admin.simple_query("SHOW POOLS").await.expect("SHOW POOLS");
    let modes: Vec<String> = pools
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row)
                if row.get("database") == Some("postgres") =>
            {
                row.get("pool_mode").map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    assert_eq!(modes, ["transaction"]);
}
