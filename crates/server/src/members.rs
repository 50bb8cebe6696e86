//! `synod member list|add|remove`: the membership API
//! (`synod_runtime::members_api`) from the command line.

use crate::cli::{MemberAddArgs, MemberCommand, MemberListArgs, MemberRemoveArgs, Output};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use synod_client::wire::{AddMemberRequest, MembersResponse};
use synod_client::Client;

/// How often `--wait` polls `GET /v1/members`.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Runs one `synod member` subcommand.
pub fn run(m: &MemberCommand) -> Result<ExitCode, String> {
    match m {
        MemberCommand::List(a) => list(a),
        MemberCommand::Add(a) => add(a),
        MemberCommand::Remove(a) => remove(a),
    }
}

/// The CLI's client, with a read timeout that covers a leader's write.
fn client(endpoints: &[String]) -> Result<Client, String> {
    crate::commands::client(endpoints).map(|c| c.with_read_timeout(Duration::from_secs(10)))
}

fn list(a: &MemberListArgs) -> Result<ExitCode, String> {
    let m = client(&a.endpoints.endpoints)?
        .members()
        .map_err(|e| e.to_string())?;
    match a.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&m).expect("wire types serialise")
        ),
        Output::Table => print!("{}", table(&m)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The human view of [`MembersResponse`].
pub fn table(m: &MembersResponse) -> String {
    let mut out = format!(
        "cluster {}  epoch {}  leader {}  raft term {}  commit index {}{}\n\n",
        m.cluster_id,
        m.epoch,
        m.leader.map_or("none".into(), |l| format!("node {l}")),
        m.raft_term,
        m.raft_commit_index,
        m.change_in_progress
            .map_or(String::new(), |e| format!("  (closing epoch {e})"))
    );
    if let Some(h) = m.egress_holder {
        out.insert_str(
            out.len() - 1,
            &format!(
                "kafka egress: node {h} publishes (lease generation {})\n",
                m.egress_generation
            ),
        );
    }
    let mut rows = vec![vec![
        "ID".to_string(),
        "PEER".into(),
        "API".into(),
        "GRPC".into(),
        "RAFT".into(),
        "MEMBER".into(),
    ]];
    for e in &m.members {
        rows.push(vec![
            e.id.to_string(),
            e.peer_addr.clone(),
            e.api_addr.clone(),
            e.grpc_addr.clone().unwrap_or_else(|| "-".into()),
            e.raft_role.clone(),
            if e.current { "current" } else { "leaving" }.into(),
        ]);
    }
    out.push_str(&align(&rows));
    out.push('\n');
    let mut rows = vec![vec![
        "EPOCH".to_string(),
        "MEMBERS".into(),
        "F".into(),
        "E".into(),
        "SEALED_BY".into(),
        "CLOSED".into(),
        "DONE".into(),
        "COMPLETE".into(),
    ]];
    let ids = |v: &[u16]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    for e in &m.epochs {
        rows.push(vec![
            e.epoch.to_string(),
            ids(&e.members),
            e.f.to_string(),
            e.e.to_string(),
            ids(&e.sealed_by),
            if e.closed {
                format!("{} ids", e.closed_ids)
            } else {
                "no".into()
            },
            ids(&e.done),
            if e.complete { "yes" } else { "no" }.into(),
        ]);
    }
    out.push_str(&align(&rows));
    out
}

/// `rows` (the first is the header) as left-aligned columns two spaces
/// apart, trailing blanks trimmed.
pub(crate) fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn add(a: &MemberAddArgs) -> Result<ExitCode, String> {
    let c = client(&a.endpoints.endpoints)?;
    let r = c
        .add_member(&AddMemberRequest {
            id: a.id,
            peer_addr: a.peer_addr.clone(),
            api_addr: a.api_addr.clone(),
            grpc_addr: a.grpc_addr.clone(),
        })
        .map_err(|e| e.to_string())?;
    println!("node {} added: epoch {}", a.id, r.epoch);
    wait(&c, a.wait, r.epoch, |m| {
        m.members
            .iter()
            .any(|e| e.id == a.id && e.raft_role == "voter")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn remove(a: &MemberRemoveArgs) -> Result<ExitCode, String> {
    let c = client(&a.endpoints.endpoints)?;
    let r = c.remove_member(a.id).map_err(|e| e.to_string())?;
    println!("node {} removed: epoch {}", a.id, r.epoch);
    // Not a voter, and no longer leading: a removed leader hands leadership
    // over before it may stop.
    wait(&c, a.wait, r.epoch, |m| {
        !m.members
            .iter()
            .any(|e| e.id == a.id && e.raft_role == "voter")
            && m.leader.is_some_and(|l| l != a.id)
    })?;
    if a.wait > 0 {
        println!(
            "node {}'s last epoch is complete: it may be stopped now",
            a.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls until epoch `epoch − 1` is complete and `also` holds, for at most
/// `wait_ms` (0: return at once).
fn wait(
    c: &Client,
    wait_ms: u64,
    epoch: u64,
    also: impl Fn(&MembersResponse) -> bool,
) -> Result<(), String> {
    if wait_ms == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut last = None;
    loop {
        if let Ok(m) = c.members() {
            let complete = m.epochs.iter().any(|e| e.epoch + 1 == epoch && e.complete)
                || m.epochs.first().is_some_and(|e| e.epoch >= epoch);
            if complete && also(&m) {
                println!("epoch {} complete", epoch - 1);
                return Ok(());
            }
            last = Some(m);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the change did not finish within {wait_ms} ms; the control plane's view:\n{}",
                last.map_or("(no answer)".into(), |m| table(&m))
            ));
        }
        std::thread::sleep(WAIT_POLL);
    }
}
