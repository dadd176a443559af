//! `bench`: the daemon's footprint and speed against the simulated cluster (BENCHMARKS.md).
//!
//! `cargo run --release --bin bench -- --sizes 100,1000,10000` prints a table and writes JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use deploy_watchdog::sim::bench::{self, Figures, Options};

#[derive(Parser)]
#[command(about = "Benchmarks deploy-watchdog (its own process) against `simulate --serve`.")]
struct Args {
    /// Deployments per run (N); each has three ReplicaSets and ten Pods.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    sizes: Vec<usize>,
    /// Rollouts watched at once (K); values above N are skipped.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    ks: Vec<usize>,
    /// How long each steady-state figure is measured.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    measure: Duration,
    /// Rollouts per latency measurement.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Rollouts the kubectl/curl reference loop runs.
    #[arg(long, default_value_t = 10)]
    reference: usize,
    /// The daemon's probe interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// The daemon's watch window: long enough for every measurement of a watched rollout; waited
    /// out after seeding, so the seeded rollouts are history when the daemon starts.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    window: Duration,
    /// The simulated Prometheus' scrape interval (default: a quarter of the sample window, 1 s).
    #[arg(long, value_parser = humantime::parse_duration)]
    scrape_interval: Option<Duration>,
    /// The deploy-watchdog binary (default: beside this one).
    #[arg(long)]
    exe: Option<PathBuf>,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/bench.json")]
    json: PathBuf,
    /// Scratch directory (scenarios, kubeconfigs, daemon logs).
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{cpu}, {cores} cores, {:.0} GiB RAM",
        mem as f64 / 1024.0 / 1024.0
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    let exe = args.exe.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("deploy-watchdog")))
    });
    let Some(exe) = exe else {
        eprintln!("bench: cannot find the deploy-watchdog binary; pass --exe");
        return ExitCode::from(2);
    };
    let opts = Options {
        sizes: args.sizes,
        ks: args.ks,
        measure: args.measure,
        samples: args.samples,
        reference: args.reference,
        exe,
        dir: args.dir,
        interval: args.interval,
        window: args.window,
        scrape_interval: args.scrape_interval,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let sizes = match runtime.block_on(bench::run(&opts)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(1);
        }
    };
    let figures = Figures {
        machine: machine(),
        interval_ms: opts.interval.as_millis() as u64,
        measure_s: opts.measure.as_secs_f64(),
        sizes,
    };
    println!("{}", bench::report::table(&figures));
    let json = serde_json::to_string_pretty(&figures).unwrap_or_default();
    if let Some(dir) = args.json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&args.json, json) {
        eprintln!("bench: writing {}: {e}", args.json.display());
        return ExitCode::from(1);
    }
    println!("JSON: {}", args.json.display());
    ExitCode::SUCCESS
}
