//! Fresh state for tests: a temp data dir, and for PostgreSQL a new database created
//! from `TEST_DATABASE_URL` (dropped again when the test's handle is dropped). Tests
//! that need PostgreSQL or Redis print why they skip when the variable is unset.

use crate::db::Backend;

/// A fresh database for one test: `url` is `None` for SQLite (the service then
/// uses a file in its data dir) or the URL of a new PostgreSQL database.
pub struct TestDb {
    pub url: Option<String>,
    pg: Option<(String, String)>,
}

/// Returns `None` (after printing the reason) when the backend is unavailable.
pub async fn test_db(backend: Backend, test: &str) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => Some(TestDb {
            url: None,
            pg: None,
        }),
        Backend::Postgres => {
            let Some(admin) = env_url("TEST_DATABASE_URL") else {
                println!("SKIP {test} [postgres]: TEST_DATABASE_URL is not set");
                return None;
            };
            let name = format!("ic_test_{}", uuid::Uuid::new_v4().simple());
            create_pg_database(&admin, &name).await;
            Some(TestDb {
                url: Some(with_database(&admin, &name)),
                pg: Some((admin, name)),
            })
        }
    }
}

/// Value of a test env var, if set and non-empty.
pub fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// `TEST_REDIS_URL`, or `None` after printing why the test skips.
pub fn redis_url(test: &str) -> Option<String> {
    let url = env_url("TEST_REDIS_URL");
    if url.is_none() {
        println!("SKIP {test}: TEST_REDIS_URL is not set");
    }
    url
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[allow(clippy::unwrap_used)] // test helper: a broken test database is a test failure
async fn create_pg_database(admin: &str, name: &str) {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await
        .unwrap();
    let _ = conn.close().await;
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            drop_pg_database_blocking(admin, name);
        }
    }
}

/// Drops database `name` (connections forced out), from a `Drop` impl: Drop cannot await
/// and the caller's runtime may be gone, so a short-lived runtime on its own thread does it.
pub fn drop_pg_database_blocking(admin: String, name: String) {
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            use sqlx::{Connection, Executor};
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = conn
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .await;
                let _ = conn.close().await;
            }
        });
    })
    .join();
}

/// Declares each listed `async fn name(backend: Backend)` as two tests,
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::db::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::db::Backend::Postgres).await
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_database_name() {
        assert_eq!(
            super::with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/db?sslmode=disable", "y"),
            "postgres://u@h/y?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://u@h", "z"),
            "postgres://u@h/z"
        );
    }
}
