//! Assessment reports: one partition per assessment (its report row and its outbox), so a finished report
//! and its notification are committed together.
use super::{backend, entity, get_json, key, put_json, text, timestamp, TableStore};
use crate::table::{odata_string, Batch, BatchOp};
use async_trait::async_trait;
use milink_core::assessment::{AssessmentReport, AssessmentStatus};
use milink_core::message::Envelope;
use milink_core::names::ConnectionName;
use milink_core::ports::{AssessmentStore, StoreError};

const REPORT: &str = "report";

fn status_text(status: AssessmentStatus) -> &'static str {
    match status {
        AssessmentStatus::Running => "Running",
        AssessmentStatus::Completed => "Completed",
        AssessmentStatus::Failed => "Failed",
    }
}

#[async_trait]
impl AssessmentStore for TableStore {
    async fn put_assessment(&self, report: &AssessmentReport, outbox: &[Envelope]) -> Result<(), StoreError> {
        let partition = key(&report.id);
        let mut row = entity(&partition, REPORT);
        row.insert("Connection".into(), report.connection.as_str().into());
        row.insert("Status".into(), status_text(report.status).into());
        row.insert("StartedAt".into(), timestamp(report.started_at).into());
        let json = serde_json::to_string(report).map_err(|e| StoreError::Backend(e.to_string()))?;
        put_json(&mut row, "Report", &json)?;
        let mut batch = Batch::new(&self.tables.assessments);
        batch.push(BatchOp::Replace { entity: row, if_match: None });
        for envelope in outbox {
            batch.push(BatchOp::Replace { entity: self.outbox_entity(&report.id, envelope)?, if_match: None });
        }
        self.counters.batch();
        self.client.submit(&batch).await.map_err(backend)?;
        self.publish_committed(&self.tables.assessments, &partition, outbox).await;
        Ok(())
    }

    async fn get_assessment(&self, id: &str) -> Result<Option<AssessmentReport>, StoreError> {
        self.counters.read();
        let stored = self.client.get(&self.tables.assessments, &key(id), REPORT).await.map_err(backend)?;
        stored.map(|s| get_json(&s.entity, "Report")).transpose()
    }

    async fn latest_assessment(&self, connection: &ConnectionName) -> Result<Option<AssessmentReport>, StoreError> {
        let filter = format!(
            "RowKey eq '{REPORT}' and Connection eq {} and Status eq 'Completed'",
            odata_string(connection.as_str())
        );
        self.counters.query();
        let rows = self.client.query(&self.tables.assessments, &filter, Some("PartitionKey,StartedAt")).await.map_err(backend)?;
        let newest = rows.iter().filter_map(|row| Some((text(row, "StartedAt")?, text(row, "PartitionKey")?))).max();
        let Some((_, partition)) = newest else { return Ok(None) };
        self.counters.read();
        let stored = self.client.get(&self.tables.assessments, &partition, REPORT).await.map_err(backend)?;
        stored.map(|s| get_json(&s.entity, "Report")).transpose()
    }
}
