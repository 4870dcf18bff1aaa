//! Assess: a read-only look at a source server; the report is stored whole and a notification follows.
use super::Retry;
use crate::context::Context;
use milink_core::assessment::{AssessmentReport, AssessmentStatus};
use milink_core::error::EngineError;
use milink_core::message::{Envelope, Payload, Stage};
use milink_core::names::ConnectionName;

/// The message that asks for an assessment, in the trace of the request that asked.
pub fn request(assessment_id: &str, connection: &ConnectionName) -> Envelope {
    Envelope {
        envelope_id: format!("assess:{assessment_id}"),
        stage: Stage::Assess,
        ordering_key: format!("assess:{assessment_id}"),
        payload: Payload::Assess { assessment_id: assessment_id.to_owned(), connection: connection.clone() },
        trace_parent: crate::telemetry::current_trace_parent(),
    }
}

/// Runs the assessment and stores the report.
pub async fn run(ctx: &Context, assessment_id: &str, connection: &ConnectionName) -> Result<(), Retry> {
    let Some(report) = ctx.assessments.get_assessment(assessment_id).await? else {
        tracing::warn!(assessment = assessment_id, "assess message for an unknown assessment dropped");
        return Ok(());
    };
    if report.status != AssessmentStatus::Running {
        return Ok(()); // a duplicate delivery of a finished assessment
    }
    // The connection was there when the request was accepted; if it is gone now, the assessment fails
    // with the lookup's words rather than retrying a config that will not change by itself.
    let lookup = ctx.config.endpoint(connection).and_then(|endpoint| Ok((endpoint, ctx.engines.for_source(endpoint)?)));
    let outcome = match lookup {
        Err(error) => Err(EngineError::definite("configuration", error.to_string(), "fix milink.toml, restart milink and assess again")),
        Ok((endpoint, engine)) => crate::telemetry::spans::traced(crate::telemetry::spans::engine_on("assess", endpoint), engine.assess(endpoint)).await,
    };
    let now = ctx.clock.now();
    let report = match outcome {
        Ok(assessment) => report.completed(assessment, now),
        Err(error) if error.is_transient() => return Err(Retry(error)),
        Err(error) => report.failed(error, now),
    };
    save(ctx, report).await
}

/// Marks an assessment failed after its retries ran out.
pub async fn give_up(ctx: &Context, assessment_id: &str, error: EngineError) -> Result<(), Retry> {
    match ctx.assessments.get_assessment(assessment_id).await? {
        Some(report) if report.status == AssessmentStatus::Running => {
            save(ctx, report.failed(error, ctx.clock.now())).await
        }
        _ => Ok(()),
    }
}

async fn save(ctx: &Context, report: AssessmentReport) -> Result<(), Retry> {
    let message = summary(&report);
    tracing::info!(assessment = %report.id, connection = %report.connection, "{message}");
    let notify = Envelope {
        envelope_id: format!("assessed:{}", report.id),
        stage: Stage::Notify,
        ordering_key: format!("assessed:{}", report.id),
        payload: Payload::AssessmentCompleted { assessment_id: report.id.clone(), message },
        trace_parent: crate::telemetry::current_trace_parent(),
    };
    ctx.assessments.put_assessment(&report, &[notify]).await?;
    Ok(())
}

fn summary(report: &AssessmentReport) -> String {
    use milink_core::assessment::Readiness;
    match &report.error {
        Some(error) => format!("assessment of {} failed: {}", report.connection, error.message),
        None => {
            let count = |r: Readiness| report.databases.iter().filter(|d| d.readiness == r).count();
            format!(
                "assessment of {} completed: {} ready, {} ready with warnings, {} not ready",
                report.connection,
                count(Readiness::Ready),
                count(Readiness::ReadyWithWarnings),
                count(Readiness::NotReady)
            )
        }
    }
}
