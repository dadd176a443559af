//! `deploy-watchdog`: the command line. Parsing only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use deploy_watchdog::telemetry::LogFormat;

#[derive(Parser)]
#[command(
    name = "deploy-watchdog",
    version,
    about = "Guards Kubernetes rollouts: rolls a bad release back and pages on-call."
)]
struct Cli {
    /// Log lines as text or JSON (stderr).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "DEPLOY_WATCHDOG_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon against a cluster (kubeconfig or in-cluster config).
    Run {
        #[arg(long, short, env = "DEPLOY_WATCHDOG_CONFIG")]
        config: PathBuf,
        /// A kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or the in-cluster config.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Validate a config file (exit 2 when it is not usable).
    CheckConfig { file: PathBuf },
    /// Check what would not work: notification sinks, providers and their queries, RBAC,
    /// health URLs, GitOps CRDs. Exit 1 when something blocks the daemon, 2 on a bad config.
    Doctor {
        #[arg(long, short, env = "DEPLOY_WATCHDOG_CONFIG")]
        config: PathBuf,
        /// A kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or the in-cluster config.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: deploy_watchdog::status::cli::Output,
    },
    /// The rollouts the watchdog watches and what it decided, read from the cluster.
    Status(deploy_watchdog::status::cli::StatusArgs),
    /// The last verdicts of each Deployment, read from its Events.
    History(deploy_watchdog::status::cli::HistoryArgs),
    /// Run scenario files against the simulated cluster.
    #[cfg(feature = "sim")]
    Simulate(deploy_watchdog::sim::cli::SimulateArgs),
    /// A bundled scenario, told as a live timeline: a good release passes, a bad one is rolled back.
    #[cfg(feature = "sim")]
    Demo,
}

/// The name kubectl runs this binary under as a plugin (`kubectl watchdog status`).
const PLUGIN_NAME: &str = "kubectl-watchdog";

fn main() -> ExitCode {
    // kubectl finds a plugin as an executable `kubectl-watchdog` on PATH and runs it with the
    // words after `kubectl watchdog`: the same commands, named as kubectl's.
    let as_plugin = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n == PLUGIN_NAME);
    let cli = if as_plugin {
        let command = <Cli as clap::CommandFactory>::command()
            .name(PLUGIN_NAME)
            .bin_name("kubectl watchdog");
        match <Cli as clap::FromArgMatches>::from_arg_matches(&command.get_matches()) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    } else {
        Cli::parse()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deploy-watchdog: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Run { config, kubeconfig } => {
                deploy_watchdog::telemetry::init(cli.log_format, "info");
                deploy_watchdog::cli::run(&config, kubeconfig.as_deref()).await
            }
            Command::CheckConfig { file } => deploy_watchdog::cli::check_config(&file),
            Command::Doctor {
                config,
                kubeconfig,
                output,
            } => {
                deploy_watchdog::telemetry::init(cli.log_format, "error,kube_client=off");
                deploy_watchdog::cli::doctor(
                    &config,
                    kubeconfig.as_deref(),
                    output == deploy_watchdog::status::cli::Output::Json,
                )
                .await
            }
            Command::Status(args) => deploy_watchdog::status::cli::status(args).await,
            Command::History(args) => deploy_watchdog::status::cli::history(args).await,
            #[cfg(feature = "sim")]
            Command::Simulate(args) => {
                deploy_watchdog::telemetry::init(cli.log_format, "error,kube_client=off");
                deploy_watchdog::sim::cli::simulate(args).await
            }
            #[cfg(feature = "sim")]
            Command::Demo => {
                deploy_watchdog::telemetry::init(cli.log_format, "error,kube_client=off");
                deploy_watchdog::sim::cli::demo().await
            }
        }
    });
    ExitCode::from(code)
}
