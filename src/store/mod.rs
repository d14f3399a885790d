//! The local store: what only this host knows (images, instances, id ranges,
//! in-flight phases). SQLite through sqlx; one file under `state_path`, its
//! schema kept by the migrations in `migrate`.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

mod migrate;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("store query failed")]
    Query(#[from] sqlx::Error),
    #[error("{kind} {name} already exists")]
    Conflict { kind: &'static str, name: String },
    #[error("cannot bring the store's schema up to date")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("no free id range left: all {0} are in use (raise [corral] idmap_max_instances)")]
    IdRangesExhausted(u32),
}

/// An image in the cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ImageRecord {
    pub fingerprint: String,
    pub alias: Option<String>,
    pub size: i64,
    pub created_at: String,
    pub properties: serde_json::Value,
}

/// Where an instance is in its life, as far as this host's work goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Being created: a restart rolls it back.
    Creating,
    /// Created and usable.
    Ready,
    /// Being deleted: a restart finishes the delete.
    Deleting,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "creating",
            Phase::Ready => "ready",
            Phase::Deleting => "deleting",
        }
    }
    fn parse(s: &str) -> Phase {
        match s {
            "creating" => Phase::Creating,
            "deleting" => Phase::Deleting,
            _ => Phase::Ready,
        }
    }
}

/// An instance as the store keeps it; `spec` is the driver's JSON.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub uuid: String,
    pub name: String,
    pub image: String,
    pub spec: String,
    pub idmap_slot: Option<u32>,
    pub phase: Phase,
    /// The power state the user asked for last: running, stopped or frozen.
    pub desired: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A snapshot of an instance's root as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotRecord {
    /// The instance's uuid.
    pub instance: String,
    pub name: String,
    /// The image fingerprint the root was made from when it was taken.
    pub image: String,
    /// The pool kind that made it (`overlay`: the upper layer; `copy`: the
    /// whole root).
    pub storage: String,
    /// Bytes it holds on disk.
    pub size: i64,
    pub created_at: String,
}

/// A standalone network as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    pub name: String,
    /// The IPv4 subnet in CIDR form.
    pub subnet: String,
    pub nat: bool,
    pub mtu: Option<u32>,
    pub description: String,
    pub created_at: String,
}

/// The store handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn now() -> String {
    stamp(time::OffsetDateTime::now_utc())
}

/// RFC 3339 in UTC with milliseconds and a `Z`: `2023-11-14T22:13:20.123Z`.
fn stamp(at: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl Store {
    /// Opens (creating if needed) the store file.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        // One writer at a time keeps id-range allocation and phase changes
        // simple; the store is never the bottleneck next to the runtime.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(open_err)?;
        migrate::run(&pool).await?;
        Ok(Store { pool })
    }

    pub async fn insert_image(&self, img: &ImageRecord) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO images (fingerprint, alias, size, created_at, properties) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&img.fingerprint)
        .bind(&img.alias)
        .bind(img.size)
        .bind(&img.created_at)
        .bind(img.properties.to_string())
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict {
                kind: "image",
                name: img.alias.clone().unwrap_or_else(|| img.fingerprint.clone()),
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn image_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ImageRecord, StoreError> {
        let props: String = row.try_get("properties")?;
        Ok(ImageRecord {
            fingerprint: row.try_get("fingerprint")?,
            alias: row.try_get("alias")?,
            size: row.try_get("size")?,
            created_at: row.try_get("created_at")?,
            properties: serde_json::from_str(&props).unwrap_or(serde_json::Value::Null),
        })
    }

    /// Finds an image by alias, full fingerprint or a unique fingerprint prefix.
    pub async fn find_image(&self, key: &str) -> Result<Option<ImageRecord>, StoreError> {
        if let Some(row) = sqlx::query("SELECT * FROM images WHERE alias = ? OR fingerprint = ?")
            .bind(key)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
        {
            return Self::image_from_row(&row).map(Some);
        }
        if key.len() >= 8 && key.chars().all(|c| c.is_ascii_hexdigit()) {
            let rows = sqlx::query("SELECT * FROM images WHERE fingerprint LIKE ?")
                .bind(format!("{key}%"))
                .fetch_all(&self.pool)
                .await?;
            if rows.len() == 1 {
                return Self::image_from_row(&rows[0]).map(Some);
            }
        }
        Ok(None)
    }

    pub async fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM images ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::image_from_row).collect()
    }

    pub async fn delete_image(&self, fingerprint: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM images WHERE fingerprint = ?")
            .bind(fingerprint)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Names of the instances built from an image.
    pub async fn image_users(&self, fingerprint: &str) -> Result<Vec<String>, StoreError> {
        // An instance whose snapshot was taken on the image uses it too: a
        // restore needs it.
        let rows = sqlx::query(
            "SELECT name FROM instances WHERE image = ?1 OR uuid IN \
             (SELECT instance FROM snapshots WHERE image = ?1) ORDER BY name",
        )
        .bind(fingerprint)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("name").map_err(StoreError::from))
            .collect()
    }

    /// Inserts a new instance in phase `creating`, allocating it a free id
    /// range slot when `want_idmap` (never shared between two instances: the
    /// slot column is unique).
    pub async fn insert_instance(
        &self,
        uuid: &str,
        name: &str,
        image: &str,
        spec: &str,
        want_idmap: bool,
        max_slots: u32,
    ) -> Result<InstanceRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        if sqlx::query("SELECT 1 FROM instances WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        {
            return Err(StoreError::Conflict {
                kind: "instance",
                name: name.to_string(),
            });
        }
        let slot = if want_idmap {
            let used: Vec<i64> = sqlx::query_scalar(
                "SELECT idmap_slot FROM instances WHERE idmap_slot IS NOT NULL ORDER BY idmap_slot",
            )
            .fetch_all(&mut *tx)
            .await?;
            let mut free = 0i64;
            for u in used {
                if u == free {
                    free += 1;
                } else if u > free {
                    break;
                }
            }
            if free >= i64::from(max_slots) {
                return Err(StoreError::IdRangesExhausted(max_slots));
            }
            Some(free as u32)
        } else {
            None
        };
        let ts = now();
        let res = sqlx::query(
            "INSERT INTO instances (uuid, name, image, spec, idmap_slot, phase, desired, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, 'creating', 'stopped', ?, ?)",
        )
        .bind(uuid)
        .bind(name)
        .bind(image)
        .bind(spec)
        .bind(slot.map(i64::from))
        .bind(&ts)
        .bind(&ts)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict {
                    kind: "instance",
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(InstanceRecord {
            uuid: uuid.to_string(),
            name: name.to_string(),
            image: image.to_string(),
            spec: spec.to_string(),
            idmap_slot: slot,
            phase: Phase::Creating,
            desired: "stopped".into(),
            created_at: ts.clone(),
            updated_at: ts,
        })
    }

    fn instance_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<InstanceRecord, StoreError> {
        let slot: Option<i64> = row.try_get("idmap_slot")?;
        let phase: String = row.try_get("phase")?;
        Ok(InstanceRecord {
            uuid: row.try_get("uuid")?,
            name: row.try_get("name")?,
            image: row.try_get("image")?,
            spec: row.try_get("spec")?,
            idmap_slot: slot.and_then(|s| u32::try_from(s).ok()),
            phase: Phase::parse(&phase),
            desired: row.try_get("desired")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// Finds an instance by its uuid (only).
    pub async fn find_instance_by_uuid(
        &self,
        uuid: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM instances WHERE uuid = ?")
            .bind(uuid)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::instance_from_row).transpose()
    }

    /// Finds an instance by its name (only).
    pub async fn find_instance_by_name(
        &self,
        name: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM instances WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::instance_from_row).transpose()
    }

    pub async fn list_instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM instances ORDER BY created_at, name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::instance_from_row).collect()
    }

    /// The uuids of every instance, without their records: what a pass over
    /// all instances that needs only their directories reads.
    pub async fn list_instance_uuids(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT uuid FROM instances ORDER BY created_at, name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn set_phase(&self, uuid: &str, phase: Phase) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET phase = ?, updated_at = ? WHERE uuid = ?")
            .bind(phase.as_str())
            .bind(now())
            .bind(uuid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_desired(&self, uuid: &str, desired: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET desired = ?, updated_at = ? WHERE uuid = ?")
            .bind(desired)
            .bind(now())
            .bind(uuid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_spec(&self, uuid: &str, spec: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET spec = ?, updated_at = ? WHERE uuid = ?")
            .bind(spec)
            .bind(now())
            .bind(uuid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_image(&self, uuid: &str, image: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET image = ?, updated_at = ? WHERE uuid = ?")
            .bind(image)
            .bind(now())
            .bind(uuid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes the instance and its snapshots' records.
    pub async fn delete_instance(&self, uuid: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM snapshots WHERE instance = ?")
            .bind(uuid)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM instances WHERE uuid = ?")
            .bind(uuid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds a snapshot; a name the instance already uses is a conflict.
    pub async fn insert_snapshot(&self, snap: &SnapshotRecord) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO snapshots (instance, name, image, storage, size, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&snap.instance)
        .bind(&snap.name)
        .bind(&snap.image)
        .bind(&snap.storage)
        .bind(snap.size)
        .bind(&snap.created_at)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict {
                kind: "snapshot",
                name: snap.name.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn snapshot_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<SnapshotRecord, StoreError> {
        Ok(SnapshotRecord {
            instance: row.try_get("instance")?,
            name: row.try_get("name")?,
            image: row.try_get("image")?,
            storage: row.try_get("storage")?,
            size: row.try_get("size")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// An instance's snapshots, oldest first.
    pub async fn list_snapshots(&self, instance: &str) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM snapshots WHERE instance = ? ORDER BY created_at, name")
                .bind(instance)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(Self::snapshot_from_row).collect()
    }

    pub async fn find_snapshot(
        &self,
        instance: &str,
        name: &str,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        sqlx::query("SELECT * FROM snapshots WHERE instance = ? AND name = ?")
            .bind(instance)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| Self::snapshot_from_row(&r))
            .transpose()
    }

    pub async fn delete_snapshot(&self, instance: &str, name: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM snapshots WHERE instance = ? AND name = ?")
            .bind(instance)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Adds a network; a name in use is a conflict.
    pub async fn insert_network(&self, net: &NetworkRecord) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO networks (name, subnet, nat, mtu, description, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&net.name)
        .bind(&net.subnet)
        .bind(net.nat)
        .bind(net.mtu.map(i64::from))
        .bind(&net.description)
        .bind(&net.created_at)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict {
                kind: "network",
                name: net.name.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn network_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<NetworkRecord, StoreError> {
        let mtu: Option<i64> = row.try_get("mtu")?;
        Ok(NetworkRecord {
            name: row.try_get("name")?,
            subnet: row.try_get("subnet")?,
            nat: row.try_get("nat")?,
            mtu: mtu.and_then(|m| u32::try_from(m).ok()),
            description: row.try_get("description")?,
            created_at: row.try_get("created_at")?,
        })
    }

    pub async fn find_network(&self, name: &str) -> Result<Option<NetworkRecord>, StoreError> {
        sqlx::query("SELECT * FROM networks WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| Self::network_from_row(&r))
            .transpose()
    }

    pub async fn list_networks(&self) -> Result<Vec<NetworkRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM networks ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::network_from_row).collect()
    }

    pub async fn delete_network(&self, name: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM networks WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// The current time as the store writes it.
    pub fn timestamp() -> String {
        now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_millis_with_z() {
        let at =
            time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(stamp(at), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            stamp(time::OffsetDateTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let east = at.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(stamp(east), "2023-11-14T22:13:20.123Z");
        assert_eq!(Store::timestamp().len(), 24);
        // The image cache reads the age back as RFC 3339.
        let back =
            time::OffsetDateTime::parse(&stamp(at), &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert_eq!(back.unix_timestamp_nanos(), 1_700_000_000_123_000_000);
    }

    /// The schema as the store created it before it kept migrations.
    const SCHEMA_BEFORE_MIGRATIONS: &[&str] = &[
        "CREATE TABLE IF NOT EXISTS images (
            fingerprint TEXT PRIMARY KEY,
            alias TEXT UNIQUE,
            size INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            properties TEXT NOT NULL DEFAULT '{}'
        )",
        "CREATE TABLE IF NOT EXISTS instances (
            uuid TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            image TEXT NOT NULL,
            spec TEXT NOT NULL,
            idmap_slot INTEGER UNIQUE,
            phase TEXT NOT NULL,
            desired TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )",
    ];

    async fn raw_pool(path: &Path) -> SqlitePool {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true);
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap()
    }

    /// Columns and indexes of the store's tables, as SQLite reports them.
    async fn shape(pool: &SqlitePool) -> Vec<String> {
        let mut out = Vec::new();
        for table in ["images", "instances"] {
            for row in sqlx::query(&format!("PRAGMA table_info({table})"))
                .fetch_all(pool)
                .await
                .unwrap()
            {
                out.push(format!(
                    "{table}.{}:{}:{}:{:?}:{}",
                    row.get::<String, _>("name"),
                    row.get::<String, _>("type"),
                    row.get::<i64, _>("notnull"),
                    row.get::<Option<String>, _>("dflt_value"),
                    row.get::<i64, _>("pk"),
                ));
            }
            for row in sqlx::query(&format!("PRAGMA index_list({table})"))
                .fetch_all(pool)
                .await
                .unwrap()
            {
                let index: String = row.get("name");
                let cols: Vec<String> = sqlx::query(&format!("PRAGMA index_info({index})"))
                    .fetch_all(pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<String, _>("name"))
                    .collect();
                out.push(format!(
                    "{table} index unique={} on {cols:?}",
                    row.get::<i64, _>("unique")
                ));
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn a_store_made_before_migrations_opens_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.sqlite");
        let pool = raw_pool(&old).await;
        for stmt in SCHEMA_BEFORE_MIGRATIONS {
            sqlx::query(stmt).execute(&pool).await.unwrap();
        }
        sqlx::query(
            "INSERT INTO images (fingerprint, alias, size, created_at, properties)
             VALUES ('abcdef0123456789', 'busybox', 42, '2023-11-14T22:13:20.123Z', '{}')",
        )
        .execute(&pool)
        .await
        .unwrap();
        let before = shape(&pool).await;
        pool.close().await;

        for _ in 0..2 {
            let s = Store::open(&old).await.unwrap();
            let img = s.find_image("busybox").await.unwrap().unwrap();
            assert_eq!(
                (img.fingerprint.as_str(), img.size),
                ("abcdef0123456789", 42)
            );
            assert_eq!(shape(&s.pool).await, before);
            let applied: Vec<(i64, bool)> =
                sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                    .fetch_all(&s.pool)
                    .await
                    .unwrap();
            assert_eq!(applied, vec![(1, true), (2, true), (3, true)]);
            s.pool.close().await;
        }

        // A new store gets the same tables.
        let fresh = Store::open(&dir.path().join("new.sqlite")).await.unwrap();
        assert_eq!(shape(&fresh.pool).await, before);
    }

    #[tokio::test]
    async fn id_ranges_are_unique_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.sqlite")).await.unwrap();
        let a = s
            .insert_instance("u1", "a", "img", "{}", true, 3)
            .await
            .unwrap();
        let b = s
            .insert_instance("u2", "b", "img", "{}", true, 3)
            .await
            .unwrap();
        let p = s
            .insert_instance("u3", "p", "img", "{}", false, 3)
            .await
            .unwrap();
        assert_eq!(
            (a.idmap_slot, b.idmap_slot, p.idmap_slot),
            (Some(0), Some(1), None)
        );
        s.delete_instance("u1").await.unwrap();
        let c = s
            .insert_instance("u4", "c", "img", "{}", true, 3)
            .await
            .unwrap();
        assert_eq!(c.idmap_slot, Some(0));
        s.insert_instance("u5", "d", "img", "{}", true, 3)
            .await
            .unwrap();
        let err = s
            .insert_instance("u6", "e", "img", "{}", true, 3)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::IdRangesExhausted(3)));
        let err = s.insert_instance("u7", "a", "img", "{}", true, 9).await;
        assert!(err.is_ok(), "name a was freed");
        let err = s
            .insert_instance("u8", "b", "img", "{}", true, 9)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }));
        assert_eq!(s.list_instances().await.unwrap().len(), 5);
        assert_eq!(
            s.find_instance_by_uuid("u2").await.unwrap().unwrap().name,
            "b"
        );
        assert_eq!(
            s.find_instance_by_name("b").await.unwrap().unwrap().uuid,
            "u2"
        );
        // A uuid is never taken for a name, nor a name for a uuid.
        assert!(s.find_instance_by_name("u2").await.unwrap().is_none());
        assert!(s.find_instance_by_uuid("b").await.unwrap().is_none());
        assert_eq!(s.image_users("img").await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn images_by_alias_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.sqlite")).await.unwrap();
        let img = ImageRecord {
            fingerprint: "abcdef0123456789".into(),
            alias: Some("busybox".into()),
            size: 10,
            created_at: now(),
            properties: serde_json::json!({"os": "busybox"}),
        };
        s.insert_image(&img).await.unwrap();
        assert_eq!(s.find_image("busybox").await.unwrap(), Some(img.clone()));
        assert_eq!(s.find_image("abcdef01").await.unwrap(), Some(img.clone()));
        assert_eq!(s.find_image("nope").await.unwrap(), None);
        assert!(matches!(
            s.insert_image(&img).await.unwrap_err(),
            StoreError::Conflict { .. }
        ));
        assert!(s.delete_image("abcdef0123456789").await.unwrap());
        assert!(s.list_images().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn networks_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.sqlite")).await.unwrap();
        let net = NetworkRecord {
            name: "corralbr0".into(),
            subnet: "10.148.0.0/24".into(),
            nat: true,
            mtu: Some(1400),
            description: "the default".into(),
            created_at: now(),
        };
        s.insert_network(&net).await.unwrap();
        assert_eq!(
            s.find_network("corralbr0").await.unwrap(),
            Some(net.clone())
        );
        assert!(matches!(
            s.insert_network(&net).await.unwrap_err(),
            StoreError::Conflict {
                kind: "network",
                ..
            }
        ));
        let other = NetworkRecord {
            name: "other".into(),
            mtu: None,
            nat: false,
            ..net.clone()
        };
        s.insert_network(&other).await.unwrap();
        assert_eq!(s.list_networks().await.unwrap(), vec![net, other]);
        assert!(s.delete_network("other").await.unwrap());
        assert!(!s.delete_network("other").await.unwrap());
        assert_eq!(s.find_network("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn snapshots_belong_to_their_instance_and_hold_their_image() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.sqlite")).await.unwrap();
        s.insert_instance("u1", "a", "img1", "{}", true, 3)
            .await
            .unwrap();
        s.insert_instance("u2", "b", "img1", "{}", true, 3)
            .await
            .unwrap();
        let snap = |instance: &str, name: &str, image: &str, at: &str| SnapshotRecord {
            instance: instance.into(),
            name: name.into(),
            image: image.into(),
            storage: "overlay".into(),
            size: 10,
            created_at: at.into(),
        };
        let s1 = snap("u1", "s1", "img0", "2026-01-01T00:00:01.000Z");
        let s2 = snap("u1", "s2", "img1", "2026-01-01T00:00:02.000Z");
        s.insert_snapshot(&s2).await.unwrap();
        s.insert_snapshot(&s1).await.unwrap();
        // The same name on another instance is another snapshot.
        s.insert_snapshot(&snap("u2", "s1", "img1", "2026-01-01T00:00:03.000Z"))
            .await
            .unwrap();
        assert!(matches!(
            s.insert_snapshot(&s1).await.unwrap_err(),
            StoreError::Conflict {
                kind: "snapshot",
                ..
            }
        ));
        assert_eq!(s.list_snapshots("u1").await.unwrap(), vec![s1.clone(), s2]);
        assert_eq!(s.find_snapshot("u1", "s1").await.unwrap(), Some(s1));
        // The instance was rebuilt from img1, its snapshot s1 still needs img0.
        assert_eq!(s.image_users("img0").await.unwrap(), vec!["a".to_string()]);
        assert!(s.delete_snapshot("u1", "s2").await.unwrap());
        assert!(!s.delete_snapshot("u1", "s2").await.unwrap());
        s.delete_instance("u1").await.unwrap();
        assert!(s.list_snapshots("u1").await.unwrap().is_empty());
        assert!(s.image_users("img0").await.unwrap().is_empty());
        assert_eq!(s.list_snapshots("u2").await.unwrap().len(), 1);
    }
}
