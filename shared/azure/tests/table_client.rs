//! The REST client against Azurite: signing, conditional writes, batches all-or-nothing, continuation.
mod support;

use milink_azure::table::{Batch, BatchOp, Entity, TableError};
use serde_json::json;

fn entity(partition: &str, row: &str, value: i64) -> Entity {
    json!({ "PartitionKey": partition, "RowKey": row, "Value": value }).as_object().unwrap().clone()
}

#[tokio::test]
async fn a_stale_etag_fails_the_whole_batch_and_keeps_nothing() {
    let client = support::azurite_client();
    let table = support::unique_prefix("batch");
    client.create_table_if_missing(&table).await.unwrap();
    client.create_table_if_missing(&table).await.unwrap();
    let first = client.insert(&table, &entity("m", "state", 1)).await.unwrap();

    let mut good = Batch::new(&table);
    good.push(BatchOp::Replace { entity: entity("m", "state", 2), if_match: Some(first.clone()) })
        .push(BatchOp::Insert(entity("m", "outbox:1", 0)));
    let etags = client.submit(&good).await.unwrap();
    assert_eq!(etags.len(), 2);

    let mut stale = Batch::new(&table);
    stale
        .push(BatchOp::Insert(entity("m", "outbox:2", 0)))
        .push(BatchOp::Replace { entity: entity("m", "state", 3), if_match: Some(first) });
    match client.submit(&stale).await {
        Err(TableError::PreconditionFailed { .. }) => {}
        other => panic!("expected a precondition failure, got {other:?}"),
    }
    let rows = client.query(&table, "PartitionKey eq 'm'", None).await.unwrap();
    let keys: Vec<_> = rows.iter().map(|r| r["RowKey"].as_str().unwrap().to_owned()).collect();
    assert_eq!(keys, ["outbox:1", "state"], "the failed batch left nothing behind");
    let state = client.get(&table, "m", "state").await.unwrap().unwrap();
    assert_eq!(state.entity["Value"], 2);
    assert_eq!(Some(&state.etag), etags[0].as_ref(), "the batch returns the state row's new ETag");
}

#[tokio::test]
async fn conditional_replace_insert_conflict_delete_and_odd_keys() {
    let client = support::azurite_client();
    let table = support::unique_prefix("crud");
    client.create_table_if_missing(&table).await.unwrap();
    let key = "it's a key: with spaces, ü and %";
    let etag = client.insert(&table, &entity(key, "r", 1)).await.unwrap();
    assert!(matches!(client.insert(&table, &entity(key, "r", 1)).await, Err(TableError::AlreadyExists { .. })));
    let newer = client.replace(&table, &entity(key, "r", 2), Some(&etag)).await.unwrap();
    assert!(matches!(
        client.replace(&table, &entity(key, "r", 3), Some(&etag)).await,
        Err(TableError::PreconditionFailed { .. })
    ));
    assert_eq!(client.get(&table, key, "r").await.unwrap().unwrap().entity["Value"], 2);
    client.delete(&table, key, "r", &newer).await.unwrap();
    assert!(client.get(&table, key, "r").await.unwrap().is_none());
    client.delete(&table, key, "r", "*").await.unwrap();
}

#[tokio::test]
async fn queries_follow_continuations_past_one_page() {
    let client = support::azurite_client();
    let table = support::unique_prefix("page");
    client.create_table_if_missing(&table).await.unwrap();
    for chunk in 0..12 {
        let mut batch = Batch::new(&table);
        for i in 0..100 {
            batch.push(BatchOp::Insert(entity("p", &format!("{:05}", chunk * 100 + i), i)));
        }
        client.submit(&batch).await.unwrap();
    }
    let rows = client.query(&table, "PartitionKey eq 'p'", Some("RowKey")).await.unwrap();
    assert_eq!(rows.len(), 1200, "a page holds at most 1000 entities; the rest come by continuation");
}

#[derive(Debug)]
struct FixedToken;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        assert_eq!(scopes, ["https://storage.azure.com/.default"]);
        Ok(azure_core::credentials::AccessToken::new(
            "storage-token",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

/// Azurite accepts only shared keys over HTTP, so the Entra path is checked against a double: a bearer
/// token for the storage scope, and an API version that accepts it (2019-02-02 or later).
#[tokio::test]
async fn entra_tokens_sign_table_requests_as_bearer() {
    use axum::http::{HeaderMap, StatusCode};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let router = axum::Router::new().fallback(move |headers: HeaderMap| {
        let record = record.clone();
        async move {
            *record.lock().unwrap() = Some(headers);
            StatusCode::NOT_FOUND
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/account1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let auth = milink_azure::auth::StorageAuth::Token(std::sync::Arc::new(FixedToken));
    let client = milink_azure::table::TableClient::new(&url, "account1", auth, reqwest::Client::new()).unwrap();
    assert!(client.get("t", "p", "r").await.unwrap().is_none());
    let headers = seen.lock().unwrap().clone().unwrap();
    assert_eq!(headers["authorization"], "Bearer storage-token");
    assert!(headers["x-ms-version"].to_str().unwrap() >= "2019-02-02");
    assert!(headers.contains_key("x-ms-date"));
}
