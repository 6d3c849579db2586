//! `qm`, quartermaster's one binary: `serve` runs the daemon; the global client options of the
//! CLI contract are here for the client commands; `strategies` lists the strategy presets.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The daemon allocates small objects from many threads; mimalloc does that with less
/// contention than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agents_cli;
mod bench;
mod client;
mod cluster;
mod encryption;
mod exec;
mod mcp;
mod monitoring;
mod notify;
#[cfg(feature = "etcd")]
mod placement;
mod scaling;
mod security_cli;
mod serve;
mod sizing;
mod tls;
mod token_file;
#[cfg(feature = "tui")]
mod top;

/// quartermaster: a resource manager for fleets of AI agents.
///
/// It hands out cpu, memory and gpus to agents by pluggable strategies (priority with
/// preemption, weighted fair share, best-fit, first-fit, spread), queues what does not fit,
/// and keeps every grant within each node's and pool's bounds.
#[derive(Debug, Parser)]
#[command(name = "qm", version, about, long_about)]
struct Cli {
    /// The daemon's address [env: QM_SERVER] [default: http://127.0.0.1:7070]
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
    /// Bearer token for the daemon [env: QM_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// PEM file of the CA certificate(s) to trust for an https:// server, instead of Mozilla's
    /// roots [env: QM_CACERT]
    #[arg(long, global = true, value_name = "FILE")]
    cacert: Option<std::path::PathBuf>,
    /// Output format
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon
    Serve(serve::ServeArgs),
    /// The node, its capacity, allocations and pressure
    Status,
    /// Request, list, show and release allocations
    #[command(subcommand)]
    Alloc(client::AllocCmd),
    /// List, create and delete pools
    #[command(subcommand)]
    Pools(client::PoolsCmd),
    /// List nodes
    Nodes,
    /// The cluster's members, which one leads, and where state lives
    Cluster,
    /// Spawn, list, show and stop agents; read their logs
    #[command(subcommand)]
    Agents(agents_cli::AgentsCmd),
    /// List, show, scale and delete fleets; push their custom metric
    #[command(subcommand)]
    Fleets(agents_cli::FleetsCmd),
    /// Create or update pools, agents and fleets from a TOML file
    Apply(agents_cli::ApplyArgs),
    /// Write the whole state (nodes, pools, live allocations) as JSON
    Export {
        /// Write to this file instead of stdout
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// Encrypt to this age X25519 recipient (age1...; repeatable): the output is an
        /// ASCII-armored age file instead of JSON
        #[arg(long, value_name = "RECIPIENT")]
        encrypt_to: Vec<String>,
    },
    /// Replace the whole state with an exported document (all or nothing)
    Import {
        /// The file `qm export` wrote
        file: std::path::PathBuf,
        /// The age identity file (AGE-SECRET-KEY-1... lines, as age-keygen writes) to decrypt
        /// an encrypted export with
        #[arg(long, value_name = "FILE")]
        identity: Option<std::path::PathBuf>,
    },
    /// Wait for admission, run CMD inside the allocation's limits, release at exit, exit with
    /// CMD's code
    Exec(exec::ExecArgs),
    /// Host and agent metrics: what history holds, current values, CSV export
    #[command(subcommand)]
    Metrics(monitoring::MetricsCmd),
    /// Alerts: pending, firing and recently resolved
    Alerts(monitoring::AlertsArgs),
    /// Live terminal view: pressure, usage against capacity, agents sorted by use; keys to
    /// sort, filter and stop; `q` quits
    Top,
    /// Right-sizing recommendations, learned from each agent's usage (TARGET: agent/NAME,
    /// fleet/NAME or template/NAME)
    Recommend { target: Option<String> },
    /// MCP server on stdio, bridged to the daemon at --server (for Claude Code, claude-flow
    /// and other MCP clients)
    Mcp,
    /// Load generator against a running daemon: throughput and latency percentiles
    Bench(bench::BenchArgs),
    /// List the allocation strategies `--strategy` accepts
    Strategies,
    /// Create, list and revoke API tokens (admin)
    #[command(subcommand)]
    Tokens(security_cli::TokensCmd),
    /// The audit log: list entries (admin), or verify its hash chain offline
    #[command(subcommand)]
    Audit(security_cli::AuditCmd),
}

/// Where client commands will reach the daemon: the flag, else the environment, else the
/// default.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    server: String,
    token: Option<String>,
    cacert: Option<std::path::PathBuf>,
}

fn endpoint(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Endpoint {
    Endpoint {
        server: cli
            .server
            .clone()
            .or_else(|| env("QM_SERVER"))
            .unwrap_or_else(|| "http://127.0.0.1:7070".to_owned()),
        token: cli.token.clone().or_else(|| env("QM_TOKEN")),
        cacert: cli
            .cacert
            .clone()
            .or_else(|| env("QM_CACERT").map(Into::into)),
    }
}

/// The client of the endpoint's daemon: trusting the CA certificates of `--cacert` when
/// given. A CA file that cannot be read or holds no certificate is a usage error.
fn connect(endpoint: &Endpoint) -> Result<qm_client::Client, client::Failure> {
    let (server, token) = (&endpoint.server, endpoint.token.as_deref());
    let Some(path) = &endpoint.cacert else {
        return Ok(qm_client::Client::new(server, token));
    };
    let usage = |reason: String| client::Failure {
        code: 2,
        message: format!("--cacert {}: {reason}", path.display()),
    };
    let pem = std::fs::read(path).map_err(|e| usage(format!("cannot read it: {e}")))?;
    qm_client::Client::with_ca_pem(server, token, &pem).map_err(|e| usage(e.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut endpoint = endpoint(&cli, |k| std::env::var(k).ok());
    if endpoint.token.is_none() && !matches!(cli.command, Cmd::Serve(_)) {
        // a daemon on this host left a pointer to its admin token file: use it if readable
        endpoint.token = token_file::discover(&endpoint.server);
    }
    let json_out = cli.output == Output::Json;
    // Only client commands build a client, so only they read --cacert; a bad one ends the
    // process before anything is printed.
    let client = || connect(&endpoint).unwrap_or_else(|f| std::process::exit(finish_code(f)));
    if matches!(cli.command, Cmd::Mcp) {
        // stdout is the protocol's: it must not stay locked here
        return finish(mcp::mcp(client()));
    }
    let out = &mut io::stdout().lock();
    let result: Result<(), client::Failure> = match cli.command {
        Cmd::Serve(args) => serve::serve(&args).map_err(|e| client::Failure {
            code: 1,
            message: format!("{e:#}"),
        }),
        Cmd::Strategies => strategies(cli.output, out).map_err(|e| client::Failure {
            code: 1,
            message: format!("{e:#}"),
        }),
        Cmd::Status => client::status(&client(), json_out, out),
        Cmd::Alloc(cmd) => client::alloc(&client(), cmd, json_out, out),
        Cmd::Pools(cmd) => client::pools(&client(), cmd, json_out, out),
        Cmd::Nodes => client::nodes(&client(), json_out, out),
        Cmd::Cluster => client::cluster(&client(), json_out, out),
        Cmd::Agents(cmd) => agents_cli::agents(&client(), cmd, json_out, out),
        Cmd::Fleets(cmd) => agents_cli::fleets(&client(), cmd, json_out, out),
        Cmd::Apply(args) => agents_cli::apply(&client(), &args, json_out, out),
        Cmd::Exec(args) => match exec::exec(&client(), &args) {
            Ok(code) => return ExitCode::from(code),
            Err(f) => Err(f),
        },
        Cmd::Metrics(cmd) => monitoring::metrics(&client(), cmd, json_out, out),
        Cmd::Alerts(args) => monitoring::alerts(&client(), &args, json_out, out),
        Cmd::Recommend { target } => {
            agents_cli::recommend(&client(), target.as_deref(), json_out, out)
        }
        #[cfg(feature = "tui")]
        Cmd::Top => top::run(&client()),
        #[cfg(not(feature = "tui"))]
        Cmd::Top => Err(client::Failure {
            code: 2,
            message: "this qm was built without the terminal view (cargo build --features tui)"
                .to_owned(),
        }),
        Cmd::Mcp => mcp::mcp(client()),
        Cmd::Bench(args) => match &args.what {
            Some(bench::BenchWhat::Sizing(s)) => sizing::sizing(s, out),
            Some(bench::BenchWhat::Scaling(s)) => scaling::scaling(s, out),
            None => bench::bench(&endpoint.server, endpoint.token.as_deref(), &args, out),
        },
        Cmd::Tokens(cmd) => security_cli::tokens(&client(), cmd, json_out, out),
        Cmd::Audit(cmd) => security_cli::audit(|| connect(&endpoint), cmd, json_out, out),
        Cmd::Export { file, encrypt_to } => {
            client::export(&client(), file.as_deref(), &encrypt_to, out)
        }
        Cmd::Import { file, identity } => client::import(&client(), &file, identity.as_deref()),
    };
    finish(result)
}

fn finish_code(f: client::Failure) -> i32 {
    eprintln!("qm: {}", f.message);
    i32::from(f.code)
}

fn finish(result: Result<(), client::Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("qm: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn strategies(output: Output, out: &mut impl Write) -> anyhow::Result<()> {
    let presets = qm_sched::presets();
    match output {
        Output::Table => {
            let width = presets
                .iter()
                .map(|p| p.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            writeln!(out, "{:width$}  SUMMARY", "NAME")?;
            for p in presets {
                writeln!(out, "{:width$}  {}", p.name, p.summary)?;
            }
        }
        Output::Json => {
            // Names and summaries are plain ASCII without quotes or backslashes.
            let items: Vec<String> = presets
                .iter()
                .map(|p| format!("{{\"name\":\"{}\",\"summary\":\"{}\"}}", p.name, p.summary))
                .collect();
            writeln!(out, "{{\"items\":[{}]}}", items.join(","))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("qm").chain(args.iter().copied()))
    }

    #[test]
    fn the_endpoint_comes_from_flag_then_env_then_default() {
        let env = |k: &str| (k == "QM_SERVER").then(|| "http://env:1".to_owned());
        let cli = parse(&["strategies"]).unwrap();
        assert_eq!(endpoint(&cli, |_| None).server, "http://127.0.0.1:7070");
        assert_eq!(endpoint(&cli, env).server, "http://env:1");
        let cli = parse(&["--server", "http://flag:2", "strategies"]).unwrap();
        assert_eq!(endpoint(&cli, env).server, "http://flag:2");
    }

    #[test]
    fn usage_errors_are_exit_code_two() {
        let err = parse(&["launch-rockets"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = parse(&["-o", "yaml", "strategies"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn strategies_lists_every_preset() {
        let mut out = Vec::new();
        strategies(Output::Table, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for p in qm_sched::presets() {
            assert!(text.contains(p.name), "{text}");
        }
        assert!(
            text.lines().nth(1).unwrap().starts_with("priority "),
            "default first: {text}"
        );
        let mut out = Vec::new();
        strategies(Output::Json, &mut out).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(
            json.starts_with("{\"items\":[{\"name\":\"priority\""),
            "{json}"
        );
    }
}
