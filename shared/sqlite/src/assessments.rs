//! Assessment reports, stored whole as JSON.
use crate::{backend, from_json, queue, to_json, SqliteStore};
use async_trait::async_trait;
use milink_core::assessment::{AssessmentReport, AssessmentStatus};
use milink_core::message::Envelope;
use milink_core::names::ConnectionName;
use milink_core::ports::{AssessmentStore, StoreError};
use rusqlite::{params, OptionalExtension};

#[async_trait]
impl AssessmentStore for SqliteStore {
    async fn put_assessment(&self, report: &AssessmentReport, outbox: &[Envelope]) -> Result<(), StoreError> {
        let report = report.clone();
        let outbox = outbox.to_vec();
        let count = outbox.len();
        let result = self.with(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            let status = match report.status {
                AssessmentStatus::Running => "Running",
                AssessmentStatus::Completed => "Completed",
                AssessmentStatus::Failed => "Failed",
            };
            tx.execute(
                "INSERT INTO assessments (id, connection, status, started_at, report) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, report = excluded.report",
                params![report.id, report.connection.as_str(), status, report.started_at.to_rfc3339(), to_json(&report)?],
            )
            .map_err(backend)?;
            queue::enqueue(&tx, &outbox)?;
            tx.commit().map_err(backend)
        })
        .await;
        if result.is_ok() {
            self.wake(count);
        }
        result
    }

    async fn get_assessment(&self, id: &str) -> Result<Option<AssessmentReport>, StoreError> {
        let id = id.to_owned();
        self.with(move |connection| {
            let report: Option<String> = connection
                .query_row("SELECT report FROM assessments WHERE id = ?1", params![id], |row| row.get(0))
                .optional()
                .map_err(backend)?;
            report.map(|r| from_json(&r)).transpose()
        })
        .await
    }

    async fn latest_assessment(&self, connection_name: &ConnectionName) -> Result<Option<AssessmentReport>, StoreError> {
        let name = connection_name.to_string();
        self.with(move |connection| {
            let report: Option<String> = connection
                .query_row(
                    "SELECT report FROM assessments WHERE connection = ?1 AND status = 'Completed' \
                     ORDER BY started_at DESC LIMIT 1",
                    params![name],
                    |row| row.get(0),
                )
                .optional()
                .map_err(backend)?;
            report.map(|r| from_json(&r)).transpose()
        })
        .await
    }
}
