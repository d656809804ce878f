//! One `Store` test suite run against every backend: each case once on embedded SQLite
//! (`sqlite::<case>`) and once on PostgreSQL (`postgres::<case>`, a fresh database per test through
//! `REPDIST_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`; start one with
//! `eval "$(scripts/services up)"`). `server_postgres` runs the whole service on PostgreSQL.

mod auth;
mod backend;
mod channels;
mod channels_api;
mod digests;
mod fixtures;
mod outbox;
mod reads;
#[path = "../it/receiver.rs"]
#[allow(dead_code)]
mod receiver;
mod recovery;
mod retention;
mod server_postgres;
mod templates;
mod writes;

/// One `#[tokio::test]` per case and backend.
macro_rules! store_suite {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::backend::Sqlite::new().await;
                    crate::$module::$case(&backend).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::backend::Postgres::new().await;
                    crate::$module::$case(&backend).await;
                }
            )*
        }
    };
}

store_suite![
    writes::reopening_keeps_everything_and_migrates_nothing_twice,
    writes::apply_is_idempotent,
    writes::repeats_within_one_batch,
    writes::a_large_group_commit,
    writes::a_failed_batch_leaves_nothing,
    writes::subscription_versions_upsert_and_keep_created_at,
    reads::delivery_status_and_deliveries_of_event,
    reads::dead_letters_page_in_order,
    reads::notifications_are_idempotent_and_newest_first,
    reads::delivery_summary_counts_every_state,
    reads::stats_windows_upsert_and_none_keeps_the_row,
    recovery::recovery_after_partial_work,
    recovery::recovery_without_unexpanded_reports_has_only_current_versions,
    channels::delivery_channels_crud,
    outbox::outbox_rows_are_kept_in_commit_order_until_removed,
    templates::email_templates_crud,
    digests::digest_members_are_durable_until_their_digest_goes_out,
    auth::api_keys_are_stored_hashed_and_revoked,
    auth::audit_rows_are_appended_filtered_and_paged,
    retention::retention_purges_ended_deliveries_of_expired_reports_only,
    retention::a_digest_is_purged_once_it_ended_and_all_its_reports_expired,
];
