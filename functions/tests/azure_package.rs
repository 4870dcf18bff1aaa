//! The packaging script's checks (issue 15, Azure item 4), on a binary that exists without a release build:
//! the debug `milink`, linked natively, so it needs this machine's glibc. The script must refuse it under a
//! lower glibc floor (what would fail to start on an older Functions image), and pack it under a floor it
//! meets after starting it as the host does and getting an answer to the readiness probe. The release build
//! against glibc 2.28 itself runs in CI (dev/test.sh runs scripts/package-functions.sh).
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The GLIBC_ versions the binary needs, as scripts/glibc-needed.py lists them (lowest first).
fn glibc_needed(binary: &Path) -> Vec<String> {
    let out = Command::new("python3").arg(repo().join("scripts/glibc-needed.py")).arg(binary).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

fn package(binary: &Path, glibc: &str, out: &Path) -> (bool, String) {
    let result = Command::new("bash")
        .arg(repo().join("scripts/package-functions.sh"))
        .args(["--binary".as_ref(), binary.as_os_str(), "--glibc".as_ref(), glibc.as_ref(), "--out".as_ref(), out.as_os_str()])
        .output()
        .unwrap();
    (result.status.success(), format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr)))
}

#[test]
fn the_glibc_reader_agrees_with_objdump() {
    let binary = milink_e2e::milink::binary();
    let needed = glibc_needed(&binary);
    assert!(needed.iter().any(|v| v == "GLIBC_2.2.5"), "every x86_64 glibc binary needs the base version: {needed:?}");
    let Ok(objdump) = Command::new("objdump").arg("-T").arg(&binary).output() else {
        eprintln!("objdump is not installed; compared with the base version only");
        return;
    };
    let text = String::from_utf8_lossy(&objdump.stdout);
    let mut from_objdump: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter(|w| w.starts_with("GLIBC_2"))
        .map(str::to_owned)
        .collect();
    from_objdump.sort();
    from_objdump.dedup();
    let mut ours = needed.clone();
    ours.sort();
    assert_eq!(ours, from_objdump);
}

#[test]
fn the_package_script_refuses_a_binary_above_its_glibc_floor_and_probes_the_one_it_packs() {
    let binary = milink_e2e::milink::binary();
    let newest = glibc_needed(&binary).pop().expect("a dynamically linked binary");
    let newest = newest.trim_start_matches("GLIBC_");
    assert_ne!(newest, "2.2.5", "a Rust binary needs more than the base version");
    let out = tempfile::tempdir().unwrap();

    // Under a floor below what it needs (2.17 is older than any glibc a Rust binary links against by
    // default today): refused, and no zip.
    let (ok, log) = package(&binary, "2.17", out.path());
    assert!(!ok, "a binary that needs glibc {newest} must not pass a 2.17 floor:\n{log}");
    assert!(log.contains(&format!("needs GLIBC_{newest}")), "{log}");
    assert!(!out.path().join("milink-functions.zip").exists());

    // Under its own version: checked, started as the host starts it, probed, zipped.
    let (ok, log) = package(&binary, newest, out.path());
    assert!(ok, "{log}");
    assert!(log.contains("answers the host's probe"), "{log}");
    assert!(log.contains("milink custom handler"), "the probe's answer is the handler's: {log}");
    assert!(out.path().join("milink-functions.zip").exists());
    assert!(out.path().join("functions/milink").exists() && out.path().join("functions/host.json").exists());
}
