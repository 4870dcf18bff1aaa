//! Entity-group transactions (`$batch`): several writes to one partition of one table, all or none.
//!
//! The service's rules are checked here before sending, because Azurite does not check all of them (a batch
//! spanning partitions is accepted there, Azurite #1215) and a test against Azurite must not pass with a batch
//! that Azure would refuse: one table, one `PartitionKey`, each entity at most once, at most 100 operations,
//! at most 4 MiB of payload.
use super::{classify, error_of, keys_of, Entity, TableClient, TableError};
use reqwest::Method;

/// The most operations one batch may hold.
pub const MAX_OPERATIONS: usize = 100;
/// The largest payload one batch may carry.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// One write in a batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    /// Insert; fails the batch if the entity exists.
    Insert(Entity),
    /// Replace if the ETag matches (`Some`), or insert-or-replace (`None`).
    Replace {
        /// The new entity.
        entity: Entity,
        /// Required ETag, or `None` for an upsert.
        if_match: Option<String>,
    },
    /// Delete if the ETag matches (`"*"`: any).
    Delete {
        /// Partition key.
        partition: String,
        /// Row key.
        row: String,
        /// Required ETag.
        if_match: String,
    },
}

impl BatchOp {
    fn keys(&self) -> Result<(&str, &str), TableError> {
        match self {
            BatchOp::Insert(entity) | BatchOp::Replace { entity, .. } => keys_of(entity),
            BatchOp::Delete { partition, row, .. } => Ok((partition, row)),
        }
    }
}

/// Writes to one partition of one table.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The table.
    pub table: String,
    /// The writes, in order.
    pub ops: Vec<BatchOp>,
}

impl Batch {
    /// An empty batch on `table`.
    pub fn new(table: &str) -> Self {
        Self { table: table.to_owned(), ops: Vec::new() }
    }

    /// Adds a write.
    pub fn push(&mut self, op: BatchOp) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Checks the entity-group rules that do not need the payload.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.ops.is_empty() {
            return Err(TableError::Invalid("an empty batch".into()));
        }
        if self.ops.len() > MAX_OPERATIONS {
            return Err(TableError::Invalid(format!(
                "a batch holds at most {MAX_OPERATIONS} operations; this one has {}",
                self.ops.len()
            )));
        }
        let (partition, _) = self.ops[0].keys()?;
        let mut seen = std::collections::HashSet::new();
        for op in &self.ops {
            let (p, r) = op.keys()?;
            if p != partition {
                return Err(TableError::Invalid(format!(
                    "a batch must stay in one partition: {partition:?} and {p:?} are both in this one"
                )));
            }
            if !seen.insert(r.to_owned()) {
                return Err(TableError::Invalid(format!("entity {r:?} appears twice in one batch")));
            }
        }
        Ok(())
    }
}

/// The multipart body; `boundary` names the batch, `changeset` the one changeset.
pub fn body(client: &TableClient, batch: &Batch, boundary: &str, changeset: &str) -> Result<String, TableError> {
    let mut out = format!("--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n");
    for op in &batch.ops {
        out.push_str(&format!("--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"));
        let (method, url, if_match, entity) = match op {
            BatchOp::Insert(entity) => ("POST", client.url(&batch.table)?, None, Some(entity)),
            BatchOp::Replace { entity, if_match } => {
                let (p, r) = keys_of(entity)?;
                ("PUT", client.entity_url(&batch.table, p, r)?, if_match.as_deref(), Some(entity))
            }
            BatchOp::Delete { partition, row, if_match } => {
                ("DELETE", client.entity_url(&batch.table, partition, row)?, Some(if_match.as_str()), None)
            }
        };
        out.push_str(&format!("{method} {url} HTTP/1.1\r\nAccept: application/json;odata=nometadata\r\n"));
        if let Some(etag) = if_match {
            out.push_str(&format!("If-Match: {etag}\r\n"));
        }
        match entity {
            Some(entity) => {
                let json = serde_json::to_string(entity).expect("JSON");
                out.push_str("Content-Type: application/json\r\nPrefer: return-no-content\r\n");
                out.push_str(&format!("Content-Length: {}\r\n\r\n{json}\r\n", json.len()));
            }
            None => out.push_str("\r\n"),
        }
    }
    out.push_str(&format!("--{changeset}--\r\n\r\n--{boundary}--\r\n"));
    if out.len() > MAX_PAYLOAD_BYTES {
        return Err(TableError::Invalid(format!(
            "a batch carries at most 4 MiB; this one is {} bytes",
            out.len()
        )));
    }
    Ok(out)
}

/// Sends the batch; returns each operation's new ETag (deletes have none).
pub(super) async fn submit(client: &TableClient, batch: &Batch) -> Result<Vec<Option<String>>, TableError> {
    batch.validate()?;
    let id = uuid::Uuid::new_v4();
    let (boundary, changeset) = (format!("batch_{id}"), format!("changeset_{}", uuid::Uuid::new_v4()));
    let payload = body(client, batch, &boundary, &changeset)?;
    let content_type = format!("multipart/mixed; boundary={boundary}");
    let response = client.send(Method::POST, client.url("$batch")?, Some(&content_type), &[], Some(payload.into_bytes())).await?;
    if !response.status().is_success() {
        return Err(error_of(response, None).await);
    }
    let text = response.text().await.map_err(|e| TableError::Transport(format!("unreadable batch response: {e}")))?;
    parse_response(&text, batch.ops.len())
}

/// Reads a `$batch` response: one `HTTP/1.1 <status>` part per operation on success, or a single failing
/// part whose error message starts with the failing operation's index (`"1:The update condition…"`).
pub fn parse_response(text: &str, expected: usize) -> Result<Vec<Option<String>>, TableError> {
    let mut parts: Vec<(u16, Option<String>, String)> = Vec::new();
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r')).peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("HTTP/1.1 ") else { continue };
        let status: u16 = rest.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut etag = None;
        for header in lines.by_ref() {
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("etag") {
                    etag = Some(value.trim().to_owned());
                }
            }
        }
        let mut body = String::new();
        while let Some(next) = lines.peek() {
            if next.starts_with("--") {
                break;
            }
            body.push_str(lines.next().unwrap_or_default());
        }
        parts.push((status, etag, body));
    }
    if let Some((status, _, body)) = parts.iter().find(|(status, _, _)| *status >= 300 || *status == 0) {
        let index = failing_index(body);
        return Err(classify(*status, body, index));
    }
    if parts.len() != expected {
        return Err(TableError::Transport(format!("batch response has {} parts for {expected} operations", parts.len())));
    }
    Ok(parts.into_iter().map(|(_, etag, _)| etag).collect())
}

fn failing_index(body: &str) -> Option<usize> {
    let parsed: serde_json::Value = serde_json::from_str(body).ok()?;
    let message = parsed["odata.error"]["message"]["value"].as_str().or_else(|| parsed["odata.error"]["message"].as_str())?;
    message.split_once(':')?.0.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::StorageAuth;
    use serde_json::json;

    fn entity(partition: &str, row: &str) -> Entity {
        json!({ "PartitionKey": partition, "RowKey": row }).as_object().unwrap().clone()
    }

    #[test]
    fn batches_are_refused_before_sending_when_they_break_entity_group_rules() {
        let mut two_partitions = Batch::new("t");
        two_partitions.push(BatchOp::Insert(entity("a", "1"))).push(BatchOp::Insert(entity("b", "1")));
        assert!(two_partitions.validate().unwrap_err().to_string().contains("one partition"));

        let mut too_many = Batch::new("t");
        for i in 0..=MAX_OPERATIONS {
            too_many.push(BatchOp::Insert(entity("a", &i.to_string())));
        }
        assert!(too_many.validate().unwrap_err().to_string().contains("at most 100"));

        let mut twice = Batch::new("t");
        twice.push(BatchOp::Insert(entity("a", "1"))).push(BatchOp::Delete { partition: "a".into(), row: "1".into(), if_match: "*".into() });
        assert!(twice.validate().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn a_failed_changeset_names_the_failing_operation() {
        let response = "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n\
            --changesetresponse_2\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 412 Precondition Failed\r\n\
            Content-Type: application/json\r\n\r\n{\"odata.error\":{\"code\":\"UpdateConditionNotSatisfied\",\"message\":{\"value\":\"1:The update condition specified in the request was not satisfied.\"}}}\r\n\
            --changesetresponse_2--\r\n--batchresponse_1--\r\n";
        match parse_response(response, 2) {
            Err(TableError::PreconditionFailed { index }) => assert_eq!(index, Some(1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_body_is_one_changeset_with_conditional_writes() {
        let client = TableClient::new(
            "http://127.0.0.1:10002/devstoreaccount1",
            "devstoreaccount1",
            StorageAuth::SharedKey { account: "devstoreaccount1".into(), key: milink_core::config::Secret::new("a2V5") },
            reqwest::Client::new(),
        )
        .unwrap();
        let mut batch = Batch::new("t");
        batch
            .push(BatchOp::Replace { entity: entity("m", "state"), if_match: Some("W/\"1\"".into()) })
            .push(BatchOp::Insert(entity("m", "outbox:x")));
        let text = body(&client, &batch, "batch_1", "changeset_2").unwrap();
        assert!(text.contains("PUT http://127.0.0.1:10002/devstoreaccount1/t(PartitionKey='m',RowKey='state') HTTP/1.1"), "{text}");
        assert!(text.contains("If-Match: W/\"1\""));
        assert!(text.contains("POST http://127.0.0.1:10002/devstoreaccount1/t HTTP/1.1"));
        assert_eq!(text.matches("--changeset_2\r\n").count(), 2);
        assert!(text.ends_with("--changeset_2--\r\n\r\n--batch_1--\r\n"));
    }
}
