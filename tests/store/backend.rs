//! The backends the suite runs against. Each test gets its own database: SQLite in a temp
//! directory, PostgreSQL as a fresh database created through an admin connection to
//! `REPDIST_TEST_DATABASE_URL` and dropped afterwards (best effort).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use repdist::store::postgres::{PostgresOptions, PostgresStore};
use repdist::store::sqlite::{SqliteOptions, SqliteStore};
use repdist::store::Store;
use sqlx::{Connection, Executor, PgConnection};

/// Opens one test database. A second `open` after dropping the first store is a restart.
#[async_trait]
pub trait Backend: Send + Sync {
    async fn open(&self) -> Arc<dyn Store>;
}

pub struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    pub async fn new() -> Sqlite {
        Sqlite { dir: tempfile::tempdir().expect("temp dir") }
    }
}

#[async_trait]
impl Backend for Sqlite {
    async fn open(&self) -> Arc<dyn Store> {
        // FULL, as in production: the suite checks what an acknowledged commit guarantees.
        Arc::new(SqliteStore::open(self.dir.path(), SqliteOptions::default()).await.expect("SQLite store opens"))
    }
}

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn admin_url() -> String {
    std::env::var("REPDIST_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

async fn admin_connection(admin: &str) -> PgConnection {
    let shown = repdist::store::redacted_url(admin);
    let advice = "start PostgreSQL with `eval \"$(scripts/services up)\"` (or point REPDIST_TEST_DATABASE_URL at one)";
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(admin)).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => panic!("PostgreSQL is not reachable at {shown}: {e}; {advice}"),
        Err(_) => panic!("PostgreSQL at {shown} did not answer within 10 s; {advice}"),
    }
}

/// A fresh PostgreSQL database for one test (or one server), dropped with this value.
pub struct Postgres {
    admin: String,
    name: String,
    url: String,
}

impl Postgres {
    /// Creates the database; panics (failing the test) when PostgreSQL is unreachable.
    pub async fn new() -> Postgres {
        let admin = admin_url();
        let name = format!("repdist_test_{}", uuid::Uuid::new_v4().simple());
        let mut connection = admin_connection(&admin).await;
        connection.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await.expect("CREATE DATABASE");
        let _ = connection.close().await;
        let mut url = url::Url::parse(&admin).expect("REPDIST_TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        Postgres { admin, name, url: url.to_string() }
    }

    /// The test database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl Backend for Postgres {
    async fn open(&self) -> Arc<dyn Store> {
        let store = PostgresStore::open(&self.url, PostgresOptions { max_connections: 4 }).await;
        Arc::new(store.expect("PostgreSQL store opens"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: use a thread of its own to wait for the DROP.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async move {
                let connect = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin)).await;
                if let Ok(Ok(mut connection)) = connect {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = tokio::time::timeout(Duration::from_secs(10), connection.execute(drop.as_str())).await;
                    let _ = connection.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}
