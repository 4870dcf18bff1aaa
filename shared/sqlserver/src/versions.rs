//! SQL Server builds and what each can do with the MI link (mi-link.md §1.1, §1.6; assessment.md §2).
//!
//! A build is four numbers compared lexicographically. The table of minimum builds is data
//! ([`minimum_link_build`]) so the readiness rule and its tests read the same numbers; the failback rule
//! ([`failback`]) combines the build with the managed instance's update policy (`databaseFormat`).
use serde::{Deserialize, Serialize};
use std::fmt;

/// A SQL Server build, e.g. 16.0.4125.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Build(pub u32, pub u32, pub u32, pub u32);

impl Build {
    /// Parses `SERVERPROPERTY('ProductVersion')`; missing trailing parts count as zero.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let mut rest = [0u32; 3];
        for slot in &mut rest {
            match parts.next() {
                Some(Ok(value)) => *slot = value,
                Some(Err(_)) => return None,
                None => break,
            }
        }
        Some(Self(major, rest[0], rest[1], rest[2]))
    }

    /// The major version (13 = 2016 … 17 = 2025).
    pub fn major(&self) -> u32 {
        self.0
    }

    /// The marketing name of the major version.
    pub fn product(&self) -> &'static str {
        match self.0 {
            17 => "SQL Server 2025",
            16 => "SQL Server 2022",
            15 => "SQL Server 2019",
            14 => "SQL Server 2017",
            13 => "SQL Server 2016",
            12 => "SQL Server 2014",
            11 => "SQL Server 2012",
            major if major > 17 => "a SQL Server newer than 2025",
            _ => "a SQL Server older than 2012",
        }
    }
}

impl fmt::Display for Build {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}.{}", self.0, self.1, self.2, self.3)
    }
}

/// The oldest build of a major version that can link to MI, and the update that brings it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinimumBuild {
    /// The build.
    pub build: Build,
    /// What to install to get there.
    pub update: &'static str,
}

/// Minimum build for a SQL Server → MI link, per major version; `None` when the version cannot link at all.
pub fn minimum_link_build(major: u32) -> Option<MinimumBuild> {
    let (build, update) = match major {
        17 => (Build(17, 0, 1000, 7), "SQL Server 2025 RTM (17.0.1000.7)"),
        16 => (Build(16, 0, 1000, 6), "SQL Server 2022 RTM (16.0.1000.6)"),
        15 => (Build(15, 0, 4312, 2), "SQL Server 2019 CU20 (15.0.4312.2)"),
        14 => (Build(14, 0, 3490, 10), "SQL Server 2017 CU31 (14.0.3456.2) and then the SQL Server 2017 Azure Connect pack (14.0.3490.10)"),
        13 => (Build(13, 0, 7000, 253), "SQL Server 2016 SP3 (13.0.6300.2) and then the SQL Server 2016 Azure Connect pack (13.0.7000.253, KB5014242)"),
        _ => return None,
    };
    Some(MinimumBuild { build, update })
}

/// SQL Server 2022 CU13: the first build that can fail the link over with T-SQL and keep it.
pub const SQL2022_TSQL_FAILOVER: Build = Build(16, 0, 4125, 3);

/// The managed instance's update policy (`properties.databaseFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdatePolicy {
    /// Always-up-to-date.
    AlwaysUpToDate,
    /// SQL Server 2022 update policy.
    SqlServer2022,
    /// SQL Server 2025 update policy.
    SqlServer2025,
}

impl UpdatePolicy {
    /// From the ARM `databaseFormat` value; unknown values are `None`.
    pub fn from_database_format(value: &str) -> Option<Self> {
        match value {
            "AlwaysUpToDate" => Some(Self::AlwaysUpToDate),
            "SQLServer2022" => Some(Self::SqlServer2022),
            "SQLServer2025" => Some(Self::SqlServer2025),
            _ => None,
        }
    }
}

/// Whether the link can survive cutover and fail back, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failback {
    /// A reverse link can be kept after cutover.
    pub possible: bool,
    /// Why (or why not), in words.
    pub reason: String,
}

/// Failback rule: SQL Server 2022 CU13+ with the MI on the SQL Server 2022 update policy, or SQL Server 2025
/// with the SQL Server 2025 policy. 2016–2019 are one-way; Always-up-to-date cannot replicate back.
/// `policy` is `None` when the target is not known yet (assessment).
pub fn failback(build: Build, policy: Option<UpdatePolicy>) -> Failback {
    let (possible, reason) = match (build.major(), policy) {
        (13..=15, _) => (false, format!("{} links one way only: cutover breaks the link and there is no failback", build.product())),
        (16, _) if build < SQL2022_TSQL_FAILOVER => {
            (false, format!("SQL Server 2022 {build} is older than CU13 (16.0.4125.3), which is needed to fail over and keep the link"))
        }
        (16, Some(UpdatePolicy::SqlServer2022)) | (17, Some(UpdatePolicy::SqlServer2025)) => {
            (true, format!("{} with a managed instance on the matching update policy can fail over and fail back", build.product()))
        }
        (16 | 17, None) => (true, format!("{} can fail back if the managed instance uses the matching update policy ({})", build.product(), matching_policy(build))),
        (16 | 17, Some(other)) => (
            false,
            format!(
                "the managed instance's update policy is {other:?}, which does not match {}: after cutover you cannot replicate back (needs {})",
                build.product(),
                matching_policy(build)
            ),
        ),
        _ => (false, format!("{} cannot use the MI link", build.product())),
    };
    Failback { possible, reason }
}

fn matching_policy(build: Build) -> &'static str {
    if build.major() >= 17 { "SQL Server 2025 update policy" } else { "SQL Server 2022 update policy" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_parse_and_compare() {
        assert_eq!(Build::parse("16.0.4125.3"), Some(Build(16, 0, 4125, 3)));
        assert_eq!(Build::parse("15.0"), Some(Build(15, 0, 0, 0)));
        assert_eq!(Build::parse("x"), None);
        assert!(Build(15, 0, 4312, 2) > Build(15, 0, 4311, 9));
        assert!(Build(13, 0, 6435, 1) < minimum_link_build(13).unwrap().build);
        assert!(minimum_link_build(12).is_none());
    }

    #[test]
    fn failback_needs_2022_cu13_and_a_matching_policy() {
        let cu13 = Build(16, 0, 4125, 3);
        assert!(failback(cu13, Some(UpdatePolicy::SqlServer2022)).possible);
        assert!(!failback(cu13, Some(UpdatePolicy::AlwaysUpToDate)).possible);
        assert!(!failback(cu13, Some(UpdatePolicy::SqlServer2025)).possible);
        assert!(!failback(Build(16, 0, 4100, 1), Some(UpdatePolicy::SqlServer2022)).possible);
        assert!(failback(Build(17, 0, 1000, 7), Some(UpdatePolicy::SqlServer2025)).possible);
        assert!(!failback(Build(15, 0, 4312, 2), Some(UpdatePolicy::SqlServer2022)).possible);
    }
}
