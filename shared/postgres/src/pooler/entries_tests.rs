//! The entries file's parsing and rewriting, against the rules of PgBouncer's loader.
use super::entries::{find, repoint, rewritten, Destination, FileError};

fn target() -> Destination {
    Destination { host: "10.0.0.2".into(), port: 5433, dbname: "shop".into() }
}

#[test]
fn only_host_port_and_dbname_of_the_named_entry_change() {
    let text = "; managed by milink\n[databases]\nother = host=10.0.0.1 port=5432\nshop = host=10.0.0.1 port=5432 dbname=shop pool_size=7 user=app\n* = host=10.0.0.1\n";
    let out = rewritten(text, "shop", &target()).unwrap();
    assert_eq!(
        out,
        "; managed by milink\n[databases]\nother = host=10.0.0.1 port=5432\nshop = host=10.0.0.2 port=5433 dbname=shop pool_size=7 user=app\n* = host=10.0.0.1\n"
    );
    // Again: nothing to change.
    assert_eq!(rewritten(&out, "shop", &target()).unwrap(), out);
}

#[test]
fn missing_parameters_are_added_and_quoted_values_survive() {
    let text = "\"my shop\" = host=h application_name='a b''c'";
    let to = Destination { host: "t".into(), port: 1, dbname: "my shop".into() };
    let out = rewritten(text, "my shop", &to).unwrap();
    assert_eq!(out, "\"my shop\" = host=t application_name='a b''c' port=1 dbname='my shop'");
    let (_, pairs) = find(&out, "my shop").unwrap();
    assert!(pairs.contains(&("application_name".into(), "a b'c".into())), "{pairs:?}");
}

#[test]
fn entries_outside_databases_and_comments_are_not_entries() {
    let text = "[pgbouncer]\nshop = 1\n[databases]\n;shop = host=x\n";
    assert!(find(text, "shop").is_none());
    assert!(find("shop = host='unterminated", "shop").is_none());
}

#[test]
fn the_file_is_replaced_under_its_lock_and_a_missing_entry_is_reported() {
    let dir = std::env::temp_dir().join(format!("milink-entries-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("databases.ini");
    std::fs::write(&file, "[databases]\nshop = host=10.0.0.1 port=5432\n").unwrap();
    assert!(repoint(&file, "shop", &target()).unwrap());
    assert!(!repoint(&file, "shop", &target()).unwrap(), "a repeat changes nothing");
    assert!(std::fs::read_to_string(&file).unwrap().contains("shop = host=10.0.0.2 port=5433 dbname=shop"));
    assert!(matches!(repoint(&file, "nope", &target()), Err(FileError::NoEntry)));
    std::fs::remove_dir_all(&dir).unwrap();
}
