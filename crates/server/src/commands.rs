//! The subcommands' bodies.

use crate::cli::{
    CheckArgs, Cli, Command, ConfigCommand, GetArgs, LogFormat, Output, ProposeArgs, StatusArgs,
    WatchArgs,
};
use crate::{config, ops, up};
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use synod_client::wire::ProposeRequest;
use synod_client::{Client, ClientError};
use tracing_subscriber::EnvFilter;

/// Exit status of a failed command (clap itself uses 2 for usage errors).
const EXIT_FAILURE: u8 = 1;

/// Runs the parsed command line; errors are printed to stderr.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Server(a) => server(&a.config, a.log_format),
        Command::Up(a) => up::up(&a),
        Command::Config(ConfigCommand::Show(flags)) => config_show(&flags),
        Command::Check(a) => check(&a),
        Command::Propose(a) => propose(&a),
        Command::Status(a) => status(&a),
        Command::Get(a) => get(&a),
        Command::Member(m) => crate::members::run(&m),
        Command::Watch(a) => watch(&a),
        Command::Kafka(k) => crate::kafka_cli::run(&k),
        Command::Agent(a) => return crate::agent::run(a),
        Command::Bench(a) => synod_bench::run(a).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("synod: error: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn server(flags: &config::ConfigFlags, log_format: LogFormat) -> Result<ExitCode, String> {
    let cfg = config::load(flags)?;
    cfg.validate().map_err(|e| e.to_string())?;
    init_tracing(log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("synod")
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    let id = cfg.id;
    tracing::info!(node = id, version = env!("CARGO_PKG_VERSION"), "starting");
    let services = cfg.kafka.is_some().then(synod_kafka::services);
    rt.block_on(synod_runtime::run_with(cfg, shutdown_signal(), services))
        .map_err(|e| format!("node {id}: {e}"))?;
    tracing::info!(node = id, "stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr, level from `RUST_LOG` (default `info`); colours only
/// on a terminal, so `synod up`'s prefixed child output stays plain.
/// Installs the log subscriber (level from `RUST_LOG`, default info).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => b.json().init(),
    }
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

fn config_show(flags: &config::ConfigFlags) -> Result<ExitCode, String> {
    let cfg = config::load(flags)?;
    print!("{}", config::to_toml(&cfg));
    if let Err(e) = cfg.validate() {
        eprintln!("synod: this config would not start: {e}");
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}

fn check(a: &CheckArgs) -> Result<ExitCode, String> {
    if !a.data_dir.is_dir() {
        return Err(format!("{}: not a directory", a.data_dir.display()));
    }
    // The data WAL, then the control plane's (`<data_dir>/control`, a WAL of
    // its own) if this replica has one.
    let control = a.data_dir.join("control");
    for dir in std::iter::once(&a.data_dir).chain(control.join("wal").is_dir().then_some(&control))
    {
        let report = synod_storage::check(dir)
            .map_err(|e| format!("{}: check failed: {e}", dir.display()))?;
        print!("{report}");
        println!("{}: ok", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn client(endpoints: &[String]) -> Result<Client, String> {
    Client::new(endpoints.iter().filter(|e| !e.trim().is_empty())).map_err(|e| e.to_string())
}

fn propose(a: &ProposeArgs) -> Result<ExitCode, String> {
    let mut req = match &a.json {
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| format!("reading stdin: {e}"))?;
                s
            } else {
                std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?
            };
            serde_json::from_str::<ProposeRequest>(&text)
                .map_err(|e| format!("{}: not a ProposeRequest: {e}", path.display()))?
        }
        None => ProposeRequest {
            client: None,
            request: None,
            ops: a
                .ops
                .iter()
                .map(|s| ops::parse_op(s))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?,
            guards: Vec::new(),
            issued_at_ms: None,
            timeout_ms: None,
        },
    };
    if a.client.is_some() {
        req.client = a.client;
        req.request = a.request;
    }
    if a.timeout.is_some() {
        req.timeout_ms = a.timeout;
    }
    let c = client(&a.endpoints.endpoints)?;
    match c.propose(&req) {
        Ok(resp) => {
            println!("{}", pretty(&resp));
            Ok(if resp.outcome.is_applied() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            })
        }
        Err(ClientError::Http { status, body }) => {
            println!("{}", pretty(&body));
            Err(format!("HTTP {status}: {}", body.message))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("wire types serialise")
}

fn get(a: &GetArgs) -> Result<ExitCode, String> {
    let c = client(&a.endpoints.endpoints)?;
    let r = if a.linearizable {
        c.read_linearizable(&a.key)
    } else {
        c.read(&a.key)
    }
    .map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
    );
    Ok(ExitCode::SUCCESS)
}

fn watch(a: &WatchArgs) -> Result<ExitCode, String> {
    let c = client(&a.endpoints.endpoints)?;
    let mut sub = c.subscribe(&a.from);
    let wait = std::time::Duration::from_millis(a.idle.unwrap_or(1000));
    let mut seen = 0u64;
    let mut out = std::io::stdout().lock();
    while a.count.is_none_or(|n| seen < n) {
        match sub.next(wait).map_err(|e| e.to_string())? {
            Some(ev) => {
                seen += 1;
                let line = serde_json::to_string(&ev).map_err(|e| e.to_string())?;
                writeln!(out, "{line}").map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
            }
            None if a.idle.is_some() => break,
            None => {}
        }
    }
    eprintln!(
        "synod watch: {seen} events; resume with --from '{}'",
        sub.token()
    );
    Ok(ExitCode::SUCCESS)
}

fn status(a: &StatusArgs) -> Result<ExitCode, String> {
    // Every endpoint on its own: this is a per-replica view, no failover.
    let mut rows = Vec::new();
    for ep in a
        .endpoints
        .endpoints
        .iter()
        .filter(|e| !e.trim().is_empty())
    {
        let r = client(std::slice::from_ref(ep))?.status();
        rows.push((ep.clone(), r));
    }
    if rows.is_empty() {
        return Err("no endpoints given".into());
    }
    let failed = rows.iter().filter(|(_, r)| r.is_err()).count();
    match a.output {
        Output::Json => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|(ep, r)| match r {
                    Ok(s) => serde_json::json!({ "endpoint": ep, "status": s }),
                    Err(ClientError::AllEndpointsFailed { last }) => {
                        serde_json::json!({ "endpoint": ep, "error": last.to_string() })
                    }
                    Err(e) => serde_json::json!({ "endpoint": ep, "error": e.to_string() }),
                })
                .collect();
            println!("{}", pretty(&v));
        }
        Output::Table => print!("{}", status_table(&rows)),
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

type StatusRow = (
    String,
    Result<synod_client::wire::StatusResponse, ClientError>,
);

fn status_table(rows: &[StatusRow]) -> String {
    let header = [
        "ENDPOINT",
        "NODE",
        "EPOCH",
        "EXECUTED",
        "LAG",
        "DIGEST",
        "PENDING",
        "IN_FLIGHT",
        "WAITING",
        "WAL_LSN",
        "DURABLE",
        "FAST",
        "SLOW",
        "FAST%",
        "RECOVERIES",
    ];
    // Lag: instances behind the replica that executed the most.
    let most = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|s| s.executed_instances)
        .max()
        .unwrap_or(0);
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    let mut errors = Vec::new();
    for (ep, r) in rows {
        match r {
            Ok(s) => table.push(vec![
                ep.clone(),
                s.node.to_string(),
                s.epoch.to_string(),
                s.executed_instances.to_string(),
                (most - s.executed_instances).to_string(),
                format!("{:016x}", s.state_digest),
                s.pending_execution.to_string(),
                s.in_flight.to_string(),
                s.waiting_proposals.to_string(),
                s.wal_last_lsn.to_string(),
                s.wal_durable_lsn.to_string(),
                s.fast_commits.to_string(),
                s.slow_commits.to_string(),
                s.fast_path_ratio
                    .map_or("-".into(), |r| format!("{:.1}", r * 100.0)),
                s.recoveries.to_string(),
            ]),
            Err(ClientError::AllEndpointsFailed { last }) => errors.push(format!("{ep}: {last}")),
            Err(e) => errors.push(format!("{ep}: {e}")),
        }
    }
    let mut out = String::new();
    if table.len() > 1 {
        out.push_str(&crate::members::align(&table));
    }
    for e in errors {
        out.push_str(&format!("unreachable {e}\n"));
    }
    out
}
