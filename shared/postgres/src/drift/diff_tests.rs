//! The comparison rules on hand-built snapshots.
use super::*;
use crate::drift::catalog::Relation;

fn name(table: &str) -> Name {
    ("public".into(), table.into())
}

fn table() -> Relation {
    Relation { kind: 'r', unlogged: false, is_partition: false, has_identity: true, partition_of: None }
}

fn column(name: &str, type_name: &str) -> Column {
    Column { name: name.into(), type_name: type_name.into(), ..Column::default() }
}

/// A linked database: `tables` on both sides, published and subscribed.
fn linked(tables: &[(&str, Vec<Column>)]) -> (Snapshot, Snapshot) {
    let mut snapshot = Snapshot::default();
    for (table_name, columns) in tables {
        snapshot.relations.insert(name(table_name), table());
        snapshot.columns.insert(name(table_name), columns.clone());
        snapshot.published.insert(name(table_name));
        snapshot.replicated.insert(name(table_name));
    }
    let mut target = snapshot.clone();
    target.published.clear();
    (snapshot, target)
}

#[test]
fn identical_sides_have_no_drift() {
    let (source, target) = linked(&[("orders", vec![column("id", "integer")])]);
    assert!(compare(&source, &target).is_empty());
}

#[test]
fn a_new_table_is_created_published_and_refreshed() {
    let (mut source, target) = linked(&[("orders", vec![column("id", "integer")])]);
    source.relations.insert(name("Toy\"Store"), table());
    source.columns.insert(name("Toy\"Store"), vec![column("id", "integer")]);
    let items = compare(&source, &target);
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].change.object, "public.Toy\"Store");
    let steps = &items[0].steps;
    assert_eq!(steps, &vec![Step::CreateTable(name("Toy\"Store")), Step::Publish(name("Toy\"Store")), Step::Refresh]);
}

#[test]
fn a_new_table_without_a_key_is_not_carried() {
    let (mut source, target) = linked(&[]);
    source.relations.insert(name("log"), Relation { has_identity: false, ..table() });
    source.columns.insert(name("log"), vec![column("line", "text")]);
    let items = compare(&source, &target);
    assert!(items[0].steps.is_empty() && items[0].change.remediation.contains("PRIMARY KEY"), "{items:?}");
}

#[test]
fn columns_added_with_reproducible_values_are_carried_and_others_are_not() {
    let (mut source, target) = linked(&[("t", vec![column("id", "integer")])]);
    let fast = Column { missing_value: Some("2026-01-01 00:00:00+00".into()), default: Some("now()".into()), ..column("at", "timestamp with time zone") };
    let constant = Column { default: Some("'x''y'::text".into()), not_null: true, ..column("note", "text") };
    let volatile = Column { default: Some("random()".into()), ..column("r", "double precision") };
    source.columns.get_mut(&name("t")).unwrap().extend([fast, constant, volatile]);
    let items = compare(&source, &target);
    assert_eq!(items.len(), 3, "{items:?}");
    let sql = |i: usize| match &items[i].steps[..] {
        [Step::Alter(sql)] => sql.clone(),
        other => panic!("{other:?}"),
    };
    assert!(sql(0).contains("DEFAULT '2026-01-01 00:00:00+00'::timestamp with time zone") && sql(0).contains("SET DEFAULT now()"));
    assert!(sql(1).contains("DEFAULT 'x''y'::text NOT NULL"), "{}", sql(1));
    assert!(items[2].steps.is_empty() && items[2].change.remediation.contains("random()"));
}

#[test]
fn type_changes_drops_and_renames_block() {
    let (mut source, target) = linked(&[("t", vec![column("id", "integer"), column("n", "integer")]), ("gone", vec![])]);
    source.columns.insert(name("t"), vec![column("id", "bigint"), column("m", "integer")]);
    source.relations.remove(&name("gone"));
    source.published.remove(&name("gone"));
    let items = compare(&source, &target);
    assert!(items.iter().all(|i| i.steps.is_empty()), "{items:?}");
    let changes: Vec<&str> = items.iter().map(|i| i.change.change.as_str()).collect();
    assert_eq!(items.len(), 4, "{changes:?}");
    assert!(changes.iter().any(|c| c.starts_with("column type changed: id bigint")));
    assert!(changes.iter().any(|c| c.starts_with("table dropped or renamed")));
    assert!(items.iter().any(|i| i.change.remediation.contains("ALTER TABLE \"public\".\"t\" ALTER COLUMN \"id\" TYPE bigint")));
}

#[test]
fn a_changed_default_is_carried_as_metadata() {
    let (mut source, target) = linked(&[("t", vec![column("id", "integer")])]);
    source.columns.get_mut(&name("t")).unwrap()[0].default = Some("7".into());
    let items = compare(&source, &target);
    assert_eq!(items[0].steps, vec![Step::Alter("ALTER TABLE \"public\".\"t\" ALTER COLUMN \"id\" SET DEFAULT 7".into())]);
}

#[test]
fn constants_are_told_from_expressions() {
    for constant in ["5", "-1.5", "true", "NULL", "'x'::character varying", "'1.5'::numeric(5,2)", "'{a,\"b c\"}'::text[]", "'it''s'::text", "(-5)"] {
        assert!(is_constant(constant), "{constant}");
    }
    for expression in ["now()", "random()", "nextval('s'::regclass)", "'a'::text || 'b'::text", "(1 + 2)", "'x'::text || now()"] {
        assert!(!is_constant(expression), "{expression}");
    }
}
