//! The store's schema migrations: the SQL files under `migrations/`, built
//! into the binary and applied in order when the store opens; sqlx records
//! what was applied in `_sqlx_migrations`.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::SqlitePool;

/// Every migration: version, description, SQL. Append only; an applied
/// migration's SQL never changes (sqlx checks its checksum).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "networks",
        include_str!("../../migrations/0002_networks.sql"),
    ),
    (
        3,
        "snapshots",
        include_str!("../../migrations/0003_snapshots.sql"),
    ),
];

/// The migrations built into the binary.
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Brings the store's schema up to date.
pub(super) async fn run(pool: &SqlitePool) -> Result<(), sqlx::migrate::MigrateError> {
    Migrator::new(Embedded).await?.run(pool).await
}
