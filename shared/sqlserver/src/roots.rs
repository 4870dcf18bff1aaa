//! The Azure trusted root certificates SQL Server must trust for the MI's DNS zone (mi-link.md §2.1 step 8).
//!
//! The blobs are data (`data/azure-trusted-root-certs.txt`, a byte-for-byte copy of the shared specs file that
//! took them verbatim from Microsoft's `New-MiLink.ps1`), compiled in so creating a link needs no file at run
//! time. They are imported under the names Microsoft's scripts use, so a server prepared by those scripts or
//! by the SSMS wizard is recognised as already done.
use crate::tsql::normalize_hex_blob;

/// The shipped file.
pub const ROOTS_FILE: &str = include_str!("../data/azure-trusted-root-certs.txt");

/// One root certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedRoot {
    /// Name on SQL Server (`MicrosoftPKI`, `DigiCertPKI`).
    pub name: &'static str,
    /// DER as upper-case hex, without `0x`.
    pub hex: String,
}

/// The roots, in the order Microsoft's script imports them.
pub fn trusted_roots() -> Vec<TrustedRoot> {
    ROOTS_FILE
        .lines()
        .filter_map(|line| {
            let (key, blob) = line.split_once(' ')?;
            let name = match key {
                "microsoftPKIcertificateBytes" => "MicrosoftPKI",
                "microsoftDigiCertCertificateBytes" => "DigiCertPKI",
                _ => return None,
            };
            Some(TrustedRoot { name, hex: normalize_hex_blob(blob)? })
        })
        .collect()
}

/// The issuer wildcard for an MI FQDN: `<name>.<dns zone>.database.windows.net` → `*.database.windows.net`
/// (and the matching suffix in sovereign clouds).
pub fn dns_wildcard(instance_fqdn: &str) -> String {
    let labels: Vec<&str> = instance_fqdn.trim_end_matches('.').split('.').collect();
    if labels.len() > 3 {
        format!("*.{}", labels[2..].join("."))
    } else {
        format!("*.{}", labels[1..].join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_roots_are_shipped_whole() {
        let roots = trusted_roots();
        assert_eq!(roots.len(), 2);
        assert_eq!(roots[0].name, "MicrosoftPKI");
        assert_eq!(roots[0].hex.len() / 2, 1452);
        assert_eq!(roots[1].name, "DigiCertPKI");
        assert_eq!(roots[1].hex.len() / 2, 914);
    }

    #[test]
    fn wildcard_follows_the_cloud() {
        assert_eq!(dns_wildcard("testcl.abc123.database.windows.net"), "*.database.windows.net");
        assert_eq!(dns_wildcard("mi.zone.database.usgovcloudapi.net"), "*.database.usgovcloudapi.net");
    }
}
