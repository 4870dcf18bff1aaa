//! A webhook receiver on loopback that records every JSON body milink posts to it.
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// A running receiver.
pub struct Webhook {
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    /// Starts listening on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let app = Router::new().route(
            "/hook",
            post(move |Json(body): Json<Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().expect("webhook mutex").push(body);
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, received })
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().expect("webhook mutex").clone()
    }
}
