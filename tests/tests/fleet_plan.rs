//! Fleet plans through the real CLI and binary, on real PostgreSQL: a plan of two waves, the second behind
//! an approval gate. The second wave waits `Queued` with its wave's reason while the first runs (also
//! across a restart of milink), still waits for its approval once the first is cut over, starts when
//! approved, and every database ends equal on both sides. A plan with problems is refused whole, with
//! every problem named.
use milink_e2e::fleet::{count, wait_all};
use milink_e2e::milink::{binary, Milink};
use milink_e2e::{pg, unique};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `milink -o json fleet <args>` against `milink`; returns the exit code and the JSON it printed.
fn fleet(milink: &Milink, dir: &std::path::Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(binary())
        .args(["--server", &milink.base, "-o", "json", "fleet"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running milink fleet");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), value, format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

fn wave_state(plan: &Value, wave: &str) -> String {
    plan["waves"].as_array().into_iter().flatten().find(|w| w["name"] == wave).map(|w| w["state"].to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_runs_its_waves_in_order_behind_an_approval_gate() -> anyhow::Result<()> {
    let databases: Vec<String> = (1..=3).map(|n| unique(&format!("FleetWave{n}"))).collect();
    for database in &databases {
        pg::load_sample(database, "toystore.sql").await?;
    }
    let mut milink = Milink::start("").await?;
    let plan_name = unique("plan").replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let dir = tempfile::tempdir()?;
    let plan = format!(
        "name = \"{plan_name}\"\n\n[[waves]]\nname = \"pilot\"\n[[waves.links]]\nsource = \"src\"\ntarget = \"dst\"\ndatabases = [\"{}\"]\n\n\
         [[waves]]\nname = \"main\"\napproval = true\n[[waves.links]]\nsource = \"src\"\ntarget = \"dst\"\ndatabases = [\"{}\", \"{}\"]\n",
        databases[0], databases[1], databases[2]
    );
    std::fs::write(dir.path().join("plan.toml"), plan)?;

    let (code, applied, output) = fleet(&milink, dir.path(), &["apply", "plan.toml"]);
    assert_eq!(code, 0, "{output}");
    let ids: Vec<String> = applied["migrations"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 3, "{applied:#}");
    assert_eq!(applied["migrations"][1]["wave"], "main");
    // Applying it again changes nothing; moving a migrating database to another wave is refused.
    let (code, again, output) = fleet(&milink, dir.path(), &["apply", "plan.toml"]);
    assert_eq!(code, 0, "{output}");
    assert!(again["migrations"].as_array().unwrap().iter().all(|m| m["existing"] == true), "{again:#}");
    let moved = std::fs::read_to_string(dir.path().join("plan.toml"))?.replacen(&format!("[\"{}\"]", databases[0]), &format!("[\"{}\"]", databases[1]), 1)
        .replacen(&format!("[\"{}\", \"{}\"]", databases[1], databases[2]), &format!("[\"{}\", \"{}\"]", databases[0], databases[2]), 1);
    std::fs::write(dir.path().join("moved.toml"), moved)?;
    let (code, _, output) = fleet(&milink, dir.path(), &["apply", "moved.toml"]);
    assert_eq!(code, 4, "a database cannot change waves while it migrates: {output}");
    assert!(output.contains("already migrating in wave"), "{output}");

    // The pilot runs; the main wave waits for it, saying so, without taking a link.
    let all = wait_all(&milink, &ids, "the pilot ready, the main wave waiting for it", TIMEOUT, |all| {
        all[0]["status"] == "ReadyForCutover"
            && all[1..].iter().all(|m| m["status"] == "Queued" && m["reason"].as_str().is_some_and(|r| r.contains("waiting for wave \"pilot\"")))
    })
    .await?;
    assert_eq!(all[1]["fleet"]["wave"], "main", "{:#}", all[1]);
    let status = milink.get(&format!("/api/fleets/{plan_name}")).await?;
    assert_eq!((wave_state(&status, "pilot"), wave_state(&status, "main")), ("\"running\"".into(), "\"waiting\"".into()), "{status:#}");
    let (code, _, output) = fleet(&milink, dir.path(), &["cutover", &plan_name, "--wave", "pilot"]);
    assert_eq!(code, 4, "a cutover without the confirmation is refused: {output}");

    let (code, cut, output) = fleet(&milink, dir.path(), &["cutover", &plan_name, "--wave", "pilot", "--confirm-traffic-stopped"]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(cut["counts"]["accepted"], 1, "{cut:#}");
    milink.wait_status(&ids[0], "Completed", TIMEOUT).await?;

    // The pilot is done; the main wave now waits for its approval, also across a restart.
    wait_all(&milink, &ids[1..], "the main wave waiting for its approval", TIMEOUT, |all| {
        all.iter().all(|m| m["reason"].as_str().is_some_and(|r| r.contains("waiting for approval of wave \"main\"")))
    })
    .await?;
    milink.restart().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = wait_all(&milink, &ids[1..], "still waiting after a restart", TIMEOUT, |all| count(all, "Queued") == 2).await?;
    assert!(after.iter().all(|m| m["reason"].as_str().is_some_and(|r| r.contains("approval"))), "{after:#?}");

    let (code, approved, output) = fleet(&milink, dir.path(), &["approve", &plan_name, "main"]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(approved["results"].as_array().map(Vec::len), Some(2), "{approved:#}");
    wait_all(&milink, &ids[1..], "the main wave ready", TIMEOUT, |all| count(all, "ReadyForCutover") == 2).await?;

    // One cutover for the whole plan: the pilot is skipped (done), the main wave completes.
    let (code, cut, output) = fleet(&milink, dir.path(), &["cutover", &plan_name, "--confirm-traffic-stopped"]);
    assert_eq!(code, 0, "{output}");
    assert_eq!((cut["counts"]["accepted"].as_u64(), cut["counts"]["skipped"].as_u64()), (Some(2), Some(1)), "{cut:#}");
    wait_all(&milink, &ids, "every migration completed", TIMEOUT, |all| count(all, "Completed") == 3).await?;
    let (code, status, output) = fleet(&milink, dir.path(), &["status", &plan_name]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(status["counts"]["Completed"], 3, "{status:#}");
    assert_eq!(status["progressPercent"], 100.0);
    assert!(status["waves"].as_array().unwrap().iter().all(|w| w["state"] == "done"), "{status:#}");
    for database in &databases {
        pg::assert_target_matches_source(database).await?;
        pg::drop_everywhere(database).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_with_problems_is_refused_whole_with_every_problem_named() -> anyhow::Result<()> {
    let milink = Milink::start("").await?;
    let plan = json!({
        "name": "bad-plan",
        "waves": [
            { "name": "one", "links": [{ "source": "src", "target": "nowhere", "databases": ["a", "a"] }] },
            { "name": "one", "links": [{ "source": "src", "target": "dst", "databases": [] }] }
        ]
    });
    let (status, body) = milink.post("/api/fleets", &plan).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_plan");
    let problems: Vec<&str> = body["error"]["details"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(problems.iter().any(|p| p.contains("appears twice in the plan")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("\"one\" appears twice")), "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("no databases")), "{problems:#?}");
    let (status, body) = milink.post("/api/fleets", &json!({ "name": "p", "waves": [{ "name": "w", "links": [{ "source": "src", "target": "nowhere", "databases": ["a"] }] }] })).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("nowhere")), "an unknown connection is named: {body}");
    assert_eq!(milink.get("/api/migrations").await?["migrations"].as_array().map(Vec::len), Some(0), "nothing was started");
    let missing = milink.get("/api/fleets/no-such-plan").await?;
    assert_eq!(missing["error"]["code"], "not_found");
    Ok(())
}
