//! Long-running operations, the ARM way (Azure REST API guidelines; the MI link specs' `x-ms-long-running-
//! operation` responses: 201/202 with `Azure-AsyncOperation` and/or `Location`, and `Retry-After`).
//!
//! - With `Azure-AsyncOperation`: poll it until `status` is `Succeeded` (then read the final resource:
//!   the original URL for PUT/PATCH, `Location` for POST when given), or `Failed`/`Canceled` (then the
//!   operation's `error` is classified like any ARM error).
//! - With only `Location`: poll it while it answers 202; 200/201 carry the result, 204 none.
//! - Each wait honours `Retry-After`, capped by [`super::client::Polling::max_interval`]; past
//!   `Polling::timeout` the call fails *transiently*, so the step is retried and, being idempotent, resumes.
use super::client::{error_fields, error_of, ArmClient, ArmResponse};
use crate::errors;
use milink_core::error::EngineError;
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

impl ArmClient {
    pub(super) async fn follow(&self, method: Method, url: &str, initial: ArmResponse, operation: &str) -> Result<Option<Value>, EngineError> {
        let deadline = Instant::now() + self.polling.timeout;
        if let Some(status_url) = initial.async_operation.clone() {
            self.poll_async_operation(&status_url, initial.retry_after, deadline, operation).await?;
            return match method {
                Method::PUT | Method::PATCH => Ok(self.send(Method::GET, url, None).await?.body),
                Method::POST => match &initial.location {
                    Some(location) => self.poll_location(&method, location, initial.retry_after, deadline, operation).await,
                    None => Ok(None),
                },
                _ => Ok(None),
            };
        }
        if let Some(location) = initial.location.clone() {
            return self.poll_location(&method, &location, initial.retry_after, deadline, operation).await;
        }
        Ok(initial.body)
    }

    async fn poll_async_operation(&self, status_url: &str, first_wait: Option<std::time::Duration>, deadline: Instant, operation: &str) -> Result<(), EngineError> {
        let mut wait = first_wait;
        loop {
            self.sleep_until_next(wait, deadline, operation).await?;
            let poll = self.send(Method::GET, status_url, None).await?;
            if !(200..=299).contains(&poll.status) {
                return Err(error_of(&poll, operation));
            }
            let status = poll.body.as_ref().and_then(|b| b.get("status")).and_then(Value::as_str).unwrap_or("InProgress");
            match status {
                "Succeeded" => return Ok(()),
                "Failed" | "Canceled" | "Cancelled" => {
                    let (code, message) = error_fields(poll.body.as_ref().and_then(|b| b.get("error")).map(|e| serde_json::json!({ "error": e })).as_ref());
                    let code = if code.is_empty() { format!("Operation{status}") } else { code };
                    return Err(errors::arm_error(0, &code, &message, operation));
                }
                _ => wait = poll.retry_after,
            }
        }
    }

    async fn poll_location(&self, method: &Method, location: &str, first_wait: Option<std::time::Duration>, deadline: Instant, operation: &str) -> Result<Option<Value>, EngineError> {
        let mut wait = first_wait;
        loop {
            self.sleep_until_next(wait, deadline, operation).await?;
            let poll = self.send(Method::GET, location, None).await?;
            match poll.status {
                202 => wait = poll.retry_after,
                200 | 201 => return Ok(poll.body),
                204 => return Ok(None),
                404 if *method == Method::DELETE => return Ok(None),
                _ => return Err(error_of(&poll, operation)),
            }
        }
    }

    async fn sleep_until_next(&self, retry_after: Option<std::time::Duration>, deadline: Instant, operation: &str) -> Result<(), EngineError> {
        let wait = self.wait_for(retry_after);
        if Instant::now() + wait > deadline {
            return Err(EngineError::transient(
                "arm_operation_pending",
                format!("{operation} is still running in Azure after {} s", self.polling.timeout.as_secs()),
                "none: milink checks again on the next attempt (each step resumes what exists)",
            ));
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }
}
