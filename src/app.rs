//! The appliance: start sinks, shards and the admin server; on SIGTERM or
//! SIGINT stop receiving, seal open chunks and let the sinks drain within
//! `shutdown_timeout`.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::config::{Balance, Config};
use crate::route::RouteTable;
use crate::rx::RxConfig;
use crate::shard::debug::ShardDebug;
use crate::shard::{self, ShardSpec};
use crate::sink::{self, Sink, SinkWriter};
use crate::telemetry::{Layout, ShardCounters, Telemetry};

/// For each route id, the indices of the sinks subscribed to it. `"*"`
/// covers every route, the junkyard included, but not the dead-letter route:
/// rejected lines reach only sinks that name that route.
pub fn route_subscriptions(config: &Config, table: &RouteTable) -> Vec<Vec<usize>> {
    table
        .routes()
        .iter()
        .map(|route| {
            let dead = config.dead_letter.route.as_deref() == Some(route.as_str());
            config
                .sinks
                .iter()
                .enumerate()
                .filter(|(_, s)| s.routes.iter().any(|r| (r == "*" && !dead) || r == route))
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}

/// Compile the rule table; the dead-letter route (if any) gets an id too.
pub fn compile_routes(config: &Config) -> anyhow::Result<RouteTable> {
    Ok(RouteTable::compile_with_extra(
        &config.rules,
        &config.junkyard,
        config.dead_letter.route.as_deref(),
    )?)
}

/// Run until SIGTERM/SIGINT. Returns after an orderly shutdown.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the admin runtime")?;

    let table = Arc::new(compile_routes(&config)?);
    let dead_letter = config.dead_letter.route.as_ref().map(|name| {
        let id = table
            .routes()
            .iter()
            .position(|r| r == name)
            .expect("compile_routes gives the dead-letter route an id") as u16;
        (id, config.dead_letter.reasons.clone())
    });
    let route_sinks = Arc::new(route_subscriptions(&config, &table));
    for (route, subscribers) in table.routes().iter().zip(route_sinks.iter()) {
        if subscribers.is_empty() {
            tracing::warn!(route = %route, "no sink subscribes to this route; its lines are dropped (reason no_sink)");
        }
    }

    let mut sinks: Vec<Arc<Sink>> = Vec::new();
    let mut writers: Vec<SinkWriter> = Vec::new();
    for sink_config in &config.sinks {
        let (sink, writer) = sink::start(sink_config)
            .with_context(|| format!("cannot start sink {:?}", sink_config.name))?;
        sinks.push(sink);
        writers.push(writer);
    }

    let cores = crate::sched::allowed_cores();
    let shard_count = match config.listen.shards {
        0 => cores.len().max(1),
        n => n,
    };
    let layout = Layout {
        routes: table.routes().len(),
        rules: table.rule_count(),
        sinks: sinks.len(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<ShardCounters>> = (0..shard_count)
        .map(|_| Arc::new(ShardCounters::new(layout)))
        .collect();
    let debug: Vec<Arc<ShardDebug>> = (0..shard_count).map(|_| Arc::default()).collect();

    // Shard 0 binds first so that port 0 resolves once and every other shard
    // joins the same SO_REUSEPORT group.
    let mut addrs = config.listen.udp.clone();
    let mut rx_buffer_bytes = 0u64;
    let mut threads = Vec::with_capacity(shard_count);
    let mut path = None;
    let siblings = crate::rx::Siblings::new(shard_count);
    for index in 0..shard_count {
        let spec = ShardSpec {
            index,
            core: if cores.is_empty() || !config.listen.pin {
                None
            } else {
                Some(cores[index % cores.len()])
            },
            nice: config.listen.nice,
            rx: RxConfig {
                addrs: addrs.clone(),
                rcvbuf: config.listen.read_buffer_size,
                max_datagram_size: config.listen.max_datagram_size,
                buffers: config.listen.recv_buffers,
                wake_coalesce: config.listen.wake_coalesce,
                spread: match config.listen.balance {
                    Balance::Flow => None,
                    Balance::Datagram => Some(shard_count),
                },
                mode: config.listen.io_uring,
                steal: config.listen.steal.then(|| (siblings.clone(), index)),
            },
            table: table.clone(),
            route_sinks: route_sinks.clone(),
            sinks: sinks.clone(),
            sanity: config.sanity.clone(),
            cardinality: config.cardinality.clone(),
            dead_letter: dead_letter.clone(),
            debug: debug[index].clone(),
            chunk: config.chunk.clone(),
            chunk_pool_buffers: config.chunk.pool_buffers(shard_count),
            layout,
            counters: counters[index].clone(),
            stop: stop.clone(),
            final_offer_timeout: config.shutdown_timeout / 2,
        };
        let (thread, opened) = shard::spawn(spec).context("cannot start shard thread")?;
        threads.push(thread);
        let opened = match opened.recv() {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                stop.store(true, Ordering::Release);
                for t in threads {
                    let _ = t.join();
                }
                return Err(e).with_context(|| format!("shard {index} cannot receive"));
            }
            Err(_) => bail!("shard {index} died while opening its sockets"),
        };
        if index == 0 {
            if let Some(why) = &opened.io_uring_error {
                tracing::warn!(error = %why, "io_uring is unavailable; receiving with recvmmsg");
            }
            if let Some(why) = &opened.nice_error {
                tracing::warn!(
                    listen_nice = config.listen.nice,
                    error = %why,
                    "the shards run at niceness {}, the process's: raising their priority needs root, CAP_SYS_NICE or RLIMIT_NICE (systemd LimitNICE=); set listen.nice = 0 to silence this",
                    opened.nice
                );
            }
            addrs = opened.local_addrs.clone();
            rx_buffer_bytes = opened.effective_rcvbuf as u64;
            if opened.effective_rcvbuf / 2 < config.listen.read_buffer_size {
                tracing::warn!(
                    requested = config.listen.read_buffer_size,
                    effective = opened.effective_rcvbuf / 2,
                    "the kernel clamped SO_RCVBUF at net.core.rmem_max and SO_RCVBUFFORCE needs CAP_NET_ADMIN; raise rmem_max (see tuning/) to get the requested size"
                );
            }
        }
        path = Some(opened.path);
    }
    let path = path.expect("at least one shard");
    tracing::info!(shards = shard_count, path = path.as_str(), "receiving");

    let telemetry = Telemetry {
        layout,
        shards: counters,
        sinks: sinks.clone(),
        route_names: table.routes().to_vec(),
        rule_labels: (0..table.rule_count())
            .map(|i| {
                (
                    i.to_string(),
                    table.routes()[table.rule_route(i) as usize].clone(),
                )
            })
            .collect(),
        debug,
        rx_buffer_bytes,
    };

    let shutdown_timeout = config.shutdown_timeout;
    runtime.block_on(async {
        let listener = crate::admin::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot bind admin listener {}", config.admin_listen))?;
        let admin_addr = listener.local_addr()?;
        let udp: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        // One machine-readable line so scripts and tests learn the resolved ports.
        println!("listening udp={} admin={}", udp.join(","), admin_addr);
        tracing::info!(udp = %udp.join(","), admin = %admin_addr, "sluice is up");
        let admin = tokio::spawn(crate::admin::serve(listener, telemetry.clone()));
        wait_for_signal().await?;
        admin.abort();
        anyhow::Ok(())
    })?;

    tracing::info!("stopping: no longer receiving, draining sinks");
    let deadline = Instant::now() + shutdown_timeout;
    stop.store(true, Ordering::Release);
    for thread in threads {
        let _ = thread.join();
    }
    let reports: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = writers
            .into_iter()
            .map(|w| scope.spawn(move || w.shutdown(deadline)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let totals = telemetry.totals();
    for (sink, report) in sinks.iter().zip(&reports) {
        if report.lines_undelivered > 0 {
            tracing::warn!(sink = %sink.name, undelivered = report.lines_undelivered, "lines not delivered before the shutdown deadline");
        }
    }
    tracing::info!(
        received_lines = totals.lines,
        routed_lines = totals.routed.iter().sum::<u64>(),
        dropped_lines = totals.dropped.iter().sum::<u64>(),
        "stopped"
    );
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}
