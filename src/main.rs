//! The `sluice` command: run the appliance, check a config, print the default.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice::config::{Config, RuleKind, DEFAULT_CONFIG};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// UDP metrics ingestion appliance: InfluxDB line protocol in, routed batched HTTP out.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded default runs
    /// (see `sluice print-default-config`).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print the compiled rule table and sink subscriptions.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the embedded default configuration.
    PrintDefaultConfig,
    /// Print, for each line read from stdin (or given with --line), the
    /// decision the running appliance would take, as one JSON object per line.
    Explain {
        /// Explain this text instead of reading stdin (may hold several lines).
        #[arg(long)]
        line: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => load(cli.config.as_ref()).and_then(sluice::app::run),
        Some(Command::Check { file }) => check(&file),
        Some(Command::Explain { line }) => {
            load(cli.config.as_ref()).and_then(|config| explain(config, &line))
        }
        Some(Command::PrintDefaultConfig) => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => {
            tracing::info!("no --config given: running on the embedded default configuration");
            Ok(Config::default_config())
        }
    }
}

fn explain(config: Config, lines: &[String]) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let explainer = sluice::explain::Explainer::new(config)?;
    let mut budgets = explainer.budgets();
    let mut input = Vec::new();
    if lines.is_empty() {
        std::io::stdin()
            .read_to_end(&mut input)
            .context("cannot read stdin")?;
    } else {
        for line in lines {
            input.extend_from_slice(line.as_bytes());
            input.push(b'\n');
        }
    }
    let now = sluice::sanity::wall_clock_ns();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for object in explainer.explain(&input, now, &mut budgets) {
        writeln!(out, "{object}")?;
    }
    Ok(())
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let table = sluice::app::compile_routes(&config)
        .with_context(|| format!("{}: cannot compile rules", path.display()))?;
    let subscriptions = sluice::app::route_subscriptions(&config, &table);
    println!("{}: OK", path.display());
    println!();
    println!("rules (tried in order; first match wins):");
    if config.rules.is_empty() {
        println!("  (none: every valid line goes to the junkyard)");
    }
    for (i, rule) in config.rules.iter().enumerate() {
        let what = match &rule.kind {
            RuleKind::Basic(name) => format!("basic    measurement == {name:?}"),
            RuleKind::Tags(pairs) => format!(
                "tags     {}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            ),
            RuleKind::Regex(p) => format!("regex    line =~ /{p}/"),
            RuleKind::NegRegex(p) => format!("negregex line !~ /{p}/"),
        };
        println!("  [{i}] {what}  -> route {:?}", rule.route);
    }
    println!("  [-] (no match)  -> junkyard route {:?}", config.junkyard);
    println!();
    println!("routes and their sinks:");
    for (route, subscribers) in table.routes().iter().zip(&subscriptions) {
        let names: Vec<&str> = subscribers
            .iter()
            .map(|&i| config.sinks[i].name.as_str())
            .collect();
        if names.is_empty() {
            println!("  {route:?} -> (no sink: lines are dropped, reason no_sink)");
        } else {
            println!("  {route:?} -> {}", names.join(", "));
        }
    }
    println!();
    println!("sinks:");
    for s in &config.sinks {
        println!(
            "  {}: {} routes={:?} batch_max_size={} batch_max_age={:?} queue_max_batches={} queue_max_size={} connections={} timeout={:?} gzip={} retry_max_age={:?} nice={}",
            s.name, s.url, s.routes, s.batch_max_size, s.batch_max_age, s.queue_max_batches, s.queue_max_size, s.connections, s.timeout, s.gzip, s.retry_max_age, s.nice
        );
    }
    let c = &config.cardinality;
    let limit = |n: u64| {
        if n == 0 {
            "off".to_string()
        } else {
            n.to_string()
        }
    };
    println!();
    println!(
        "budgets (per shard, window {:?}): max_series={} max_lines_per_second={}",
        c.window,
        limit(c.max_series),
        limit(c.max_lines_per_second)
    );
    for l in &c.limits {
        println!(
            "  measurement {:?}: max_series={} max_lines_per_second={}",
            l.measurement,
            limit(l.max_series.unwrap_or(c.max_series)),
            limit(l.max_lines_per_second.unwrap_or(c.max_lines_per_second))
        );
    }
    for r in &c.routes {
        println!(
            "  route {:?}: max_series={} max_lines_per_second={}",
            r.route,
            limit(r.max_series),
            limit(r.max_lines_per_second)
        );
    }
    if let Some(route) = &config.dead_letter.route {
        let reasons = &config.dead_letter.reasons;
        println!(
            "dead letters: route {route:?}, reasons {}",
            if reasons.is_empty() {
                "all".to_string()
            } else {
                reasons.join(", ")
            }
        );
    }
    println!();
    println!(
        "listen: udp={:?} shards={} io_uring={:?} read_buffer_size={} wake_coalesce={:?} balance={:?} steal={} nice={}; admin: {}",
        config
            .listen
            .udp
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
        if config.listen.shards == 0 {
            "auto".to_string()
        } else {
            config.listen.shards.to_string()
        },
        config.listen.io_uring,
        config.listen.read_buffer_size,
        config.listen.wake_coalesce,
        config.listen.balance,
        config.listen.steal,
        config.listen.nice,
        config.admin_listen
    );
    println!(
        "chunks: max_size={} max_age={:?} pool={} (shared out over the shards, at least one buffer each)",
        config.chunk.max_size, config.chunk.max_age, config.chunk.pool
    );
    Ok(())
}
