//! Fleet plans: many migrations in waves, with an order between waves and optional approval gates.
//!
//! A plan is a TOML file (`milink fleet apply plan.toml`) or the same as JSON (`POST /api/fleets`):
//!
//! ```toml
//! name = "tailspin-q1"
//!
//! [[waves]]
//! name = "pilot"
//! [[waves.links]]
//! source = "tailspin-src"
//! target = "tailspin-dst"
//! databases = ["ToyStore"]
//!
//! [[waves]]
//! name = "main"
//! approval = true          # starts only after `milink fleet approve tailspin-q1 main`
//! start_after = "completed" # or "ready": when every earlier wave is ReadyForCutover or done
//! [[waves.links]]
//! source = "tailspin-src"
//! target = "tailspin-dst"
//! databases = ["Customer360", "Wingtip"]
//! settings = { keepReverseLink = true }
//! ```
//!
//! **No plan store.** Applying a plan creates every migration of every wave at once, each carrying its
//! [`Membership`] (plan, wave, gate); the plan's state is the state of its migrations. So every host that
//! stores migrations runs plans (the embedded SQLite store, Azure Table Storage), a restart loses nothing,
//! and the fan-out is the ordinary one: each migration's first message goes through the host's queue.
//! Every migration validates at once (a plan that can never fit, a database that is not ready or a bad
//! connection shows up at apply time, not when its wave comes), then waits as `Queued` with its wave's
//! reason until its gate opens; admission control ([`crate::admission`]) checks the gate before capacity,
//! so a gated migration never holds a younger one's place on its servers.
//!
//! **The gate** ([`gate`]): a wave starts when every migration of every earlier wave is done — Completed
//! or Cancelled by the user (`start_after = "completed"`, the default: wave 2 moves only once wave 1 is cut
//! over), or ReadyForCutover too (`"ready"`: seed the next wave while the earlier one waits for its
//! cutover). A Failed migration, or one that failed back, in an earlier wave holds the later waves (a
//! careful DBA looks before going on); approving the wave after that failure lets it start anyway (an
//! approval given earlier does not cover a failure that comes after it). A wave with `approval = true`
//! also waits for its approval (`POST /api/fleets/{name}/approve`), given per migration so it survives
//! restarts like everything else.
//!
//! Retrying a failed database: re-apply the plan; the database gets a new migration in the same wave, and
//! the failed one no longer counts for the gate (its retry does).
//!
//! Re-applying a plan is idempotent: a database already migrating on that link keeps its migration (and
//! its wave); only new databases (and retries of failed or cancelled ones) are added. A plan applied
//! again must keep its waves' names and order and its databases' waves (the API refuses it otherwise):
//! waves are numbered by their place in the plan.
use crate::migration::{Migration, Phase, Settings, Status};
use crate::names::{ConnectionName, DatabaseName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A fleet plan as the user writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    /// The plan's name: letters, digits, `-`, `_`, `.`; at most 63.
    pub name: String,
    /// Waves, in the order they start.
    pub waves: Vec<WavePlan>,
}

/// One wave of a plan.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WavePlan {
    /// The wave's name (unique in the plan).
    pub name: String,
    /// Wait for an approval before starting.
    #[serde(default)]
    pub approval: bool,
    /// When the earlier waves let this one start.
    #[serde(default, alias = "start_after")]
    pub start_after: StartAfter,
    /// The databases, grouped by source and target.
    pub links: Vec<LinkGroup>,
}

/// Databases of one source, to one target, with one set of settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkGroup {
    /// Source connection.
    pub source: String,
    /// Target connection.
    pub target: String,
    /// Databases (same name on both sides).
    pub databases: Vec<String>,
    /// Settings of these migrations.
    #[serde(default)]
    pub settings: Settings,
}

/// When the earlier waves let a wave start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StartAfter {
    /// Every earlier migration is Completed (or Cancelled).
    #[default]
    Completed,
    /// Every earlier migration is ReadyForCutover, cutting over, or done.
    Ready,
}

/// What a migration knows of its plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// The plan's name.
    pub plan: String,
    /// The wave's position in the plan, from 1.
    pub wave: u32,
    /// The wave's name.
    pub wave_name: String,
    /// The wave waits for an approval.
    pub approval: bool,
    /// When the earlier waves let it start.
    pub start_after: StartAfter,
    /// When the wave was last approved: it satisfies the approval gate, and lets the wave start past an
    /// earlier migration that failed before that moment (a failure after it holds the wave again).
    #[serde(default)]
    pub approved_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One migration a plan asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Source connection.
    pub source: ConnectionName,
    /// Target connection.
    pub target: ConnectionName,
    /// Database.
    pub database: DatabaseName,
    /// Settings.
    pub settings: Settings,
    /// Its place in the plan.
    pub membership: Membership,
}

/// Whether `name` can name a plan or a wave (it appears in URLs, logs and reasons).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Plan {
    /// Reads a plan from TOML.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| format!("the plan is not valid TOML for a fleet plan: {e}"))
    }

    /// Checks the plan and lists its migrations in wave order; every problem at once, so one edit fixes all.
    pub fn migrations(&self) -> Result<Vec<Planned>, Vec<String>> {
        let mut problems = Vec::new();
        if !valid_name(&self.name) {
            problems.push(format!("plan name {:?}: use 1 to 63 letters, digits, '-', '_' or '.'", self.name));
        }
        if self.waves.is_empty() {
            problems.push("the plan has no waves: add at least one [[waves]] with its [[waves.links]]".into());
        }
        let mut wave_names = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut planned = Vec::new();
        for (index, wave) in self.waves.iter().enumerate() {
            if !valid_name(&wave.name) {
                problems.push(format!("wave name {:?}: use 1 to 63 letters, digits, '-', '_' or '.'", wave.name));
            }
            if !wave_names.insert(wave.name.clone()) {
                problems.push(format!("wave {:?} appears twice: wave names are unique in a plan", wave.name));
            }
            if wave.links.iter().all(|l| l.databases.is_empty()) {
                problems.push(format!("wave {:?} has no databases", wave.name));
            }
            let membership = Membership {
                plan: self.name.clone(),
                wave: index as u32 + 1,
                wave_name: wave.name.clone(),
                approval: wave.approval,
                start_after: wave.start_after,
                approved_at: None,
            };
            for link in &wave.links {
                if let Err(e) = link.settings.validate() {
                    problems.push(format!("wave {:?}, {} → {}: {e}", wave.name, link.source, link.target));
                }
                let (source, target) = match (ConnectionName::parse(&link.source), ConnectionName::parse(&link.target)) {
                    (Ok(s), Ok(t)) => (s, t),
                    (s, t) => {
                        for e in [s.err(), t.err()].into_iter().flatten() {
                            problems.push(format!("wave {:?}: {e}", wave.name));
                        }
                        continue;
                    }
                };
                for name in &link.databases {
                    let database = match DatabaseName::parse(name) {
                        Ok(d) => d,
                        Err(e) => {
                            problems.push(format!("wave {:?}: {e}", wave.name));
                            continue;
                        }
                    };
                    if !seen.insert((source.clone(), target.clone(), database.clone())) {
                        problems.push(format!(
                            "{database} from {source} to {target} appears twice in the plan: a database migrates once, in one wave"
                        ));
                        continue;
                    }
                    planned.push(Planned {
                        source: source.clone(),
                        target: target.clone(),
                        database,
                        settings: link.settings.clone(),
                        membership: membership.clone(),
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(planned)
        } else {
            Err(problems)
        }
    }
}

/// Why `m`'s wave may not start yet, given `members` (every migration of its plan, finished ones too);
/// None when the gate is open (or `m` is in no plan). A migration that failed or was cancelled and was
/// then started again by re-applying the plan (a newer migration of the same database on the same link)
/// is left out: its retry speaks for it.
pub fn gate(m: &Migration, members: &[&Migration]) -> Option<String> {
    let own = m.fleet.as_ref()?;
    let retried = |o: &Migration| {
        members.iter().any(|x| x.source == o.source && x.target == o.target && x.database == o.database && (x.created_at, &x.id) > (o.created_at, &o.id))
    };
    let earlier: Vec<&&Migration> = members
        .iter()
        .filter(|o| o.fleet.as_ref().is_some_and(|f| f.plan == own.plan && f.wave < own.wave))
        .filter(|o| !retried(o))
        .collect();
    let waiting = |o: &Migration| -> bool {
        let done = matches!(o.phase, Phase::Completed | Phase::Cancelled);
        match own.start_after {
            StartAfter::Completed => !done && !failed(o),
            StartAfter::Ready => !done && !failed(o) && !matches!(o.status(), Status::ReadyForCutover | Status::CuttingOver),
        }
    };
    let pending: Vec<&&&Migration> = earlier.iter().filter(|o| waiting(o)).collect();
    if let Some(first) = pending.first() {
        let wave = first.fleet.as_ref().map_or("", |f| f.wave_name.as_str());
        let what = match own.start_after {
            StartAfter::Completed => "completed",
            StartAfter::Ready => "ready for cutover",
        };
        return Some(format!(
            "{WAITING_FOR_WAVE}{wave:?} of plan {:?}: {} earlier migration(s) not {what} yet (first: {} is {})",
            own.plan,
            pending.len(),
            first.database,
            first.status().as_str()
        ));
    }
    // A failure holds the wave unless the wave was approved after it.
    let failures: Vec<&&&Migration> =
        earlier.iter().filter(|o| failed(o)).filter(|o| own.approved_at.is_none_or(|at| failed_at(o) > at)).collect();
    if let Some(first) = failures.first() {
        return Some(format!(
            "{HELD}{} migration(s) of an earlier wave of plan {:?} ended {} (first: {}); look at them, then approve wave {:?} to start it anyway",
            failures.len(),
            own.plan,
            first.status().as_str(),
            first.database,
            own.wave_name
        ));
    }
    if own.approval && own.approved_at.is_none() {
        return Some(format!("{WAITING_FOR_APPROVAL}{:?} of plan {:?} (milink fleet approve {} {})", own.wave_name, own.plan, own.plan, own.wave_name));
    }
    None
}

/// What a user can do about a migration waiting for its wave.
pub const GATE_REMEDIATION: &str = "nothing is needed if the plan goes as planned: the wave starts by itself when the earlier waves \
     are done (cut them over: milink fleet cutover <plan> --wave <wave> --confirm-traffic-stopped); a wave that needs approval starts after \
     milink fleet approve <plan> <wave>; approving also lets a wave start past a failed earlier migration";

const WAITING_FOR_WAVE: &str = "waiting for wave ";
const HELD: &str = "held: ";
const WAITING_FOR_APPROVAL: &str = "waiting for approval of wave ";

/// Whether a gate's reason is one an approval lifts (waiting for the approval, or held by a failure).
pub fn approval_lifts(reason: &str) -> bool {
    reason.starts_with(WAITING_FOR_APPROVAL) || reason.starts_with(HELD)
}

/// Whether a queued migration's reason is its wave's gate ([`gate`]), not capacity.
pub fn is_gate_reason(reason: &str) -> bool {
    [WAITING_FOR_WAVE, HELD, WAITING_FOR_APPROVAL].iter().any(|prefix| reason.starts_with(prefix))
}

/// When `m` ended Failed or FailedBack (its history says), else its last change.
fn failed_at(m: &Migration) -> chrono::DateTime<chrono::Utc> {
    let ended = [Status::Failed.as_str(), Status::FailedBack.as_str()];
    m.history.iter().rev().find(|h| ended.contains(&h.status.as_str())).map_or(m.updated_at, |h| h.at)
}

fn failed(m: &Migration) -> bool {
    matches!(m.phase, Phase::Failed | Phase::FailedBack)
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
