//! `deploy-watchdog status` and `deploy-watchdog history` (also `kubectl watchdog …`): the
//! cluster's record, read with a kubeconfig.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::read::{self, Scope};
use super::render::{self, Style};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Where to read: the kubeconfig and the namespace, as kubectl takes them.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// A Deployment's name: only its rollouts.
    pub deployment: Option<String>,
    /// The namespace; default: the kubeconfig context's.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// A kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or the in-cluster config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; default: its current context.
    #[arg(long)]
    pub context: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// Keep watching: redraw when something changes (Ctrl-C ends).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch: how often to read the cluster.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Verdicts shown per Deployment under the rollouts.
    #[arg(long, default_value_t = 3)]
    pub recent: usize,
}

#[derive(clap::Args, Debug, Clone)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub target: Target,
    /// The last N verdicts of each Deployment.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
}

/// Exit status when the cluster cannot be read.
const EXIT_UNREADABLE: u8 = 1;

async fn connect(t: &Target) -> Result<(kube::Client, Scope), String> {
    let options = kube::config::KubeConfigOptions {
        context: t.context.clone(),
        ..Default::default()
    };
    let config = match &t.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None if t.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| e.to_string())?,
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    let namespace = if t.all_namespaces {
        None
    } else {
        Some(
            t.namespace
                .clone()
                .unwrap_or_else(|| config.default_namespace.clone()),
        )
    };
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    Ok((
        client,
        Scope {
            namespace,
            deployment: t.deployment.clone(),
        },
    ))
}

/// The terminal's width: `$COLUMNS`, else what `stty size` says of the terminal.
fn terminal_width() -> Option<usize> {
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return Some(c);
    }
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn style() -> Style {
    if std::io::stdout().is_terminal() {
        Style {
            colour: std::env::var_os("NO_COLOR").is_none(),
            width: terminal_width(),
        }
    } else {
        Style::PLAIN
    }
}

/// `status`.
pub async fn status(args: StatusArgs) -> u8 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (client, scope) = match connect(&args.target).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot reach Kubernetes: {e}");
            return EXIT_UNREADABLE;
        }
    };
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    let mut out = std::io::stdout();
    loop {
        let text = match read::report(&client, &scope, args.recent).await {
            Ok(r) => match args.target.output {
                Output::Json => serde_json::to_string(&r).unwrap_or_default() + "\n",
                Output::Text => render::report(&r, style()),
            },
            Err(e) if args.watch => format!("cannot read the cluster: {e}\n"),
            Err(e) => {
                eprintln!("{e}");
                return EXIT_UNREADABLE;
            }
        };
        if !args.watch {
            let _ = out.write_all(text.as_bytes());
            return 0;
        }
        if text != last {
            let frame = if tty && args.target.output == Output::Text {
                // Home, draw, clear what the last frame left below.
                format!("\x1b[H\x1b[2J{text}")
            } else if args.target.output == Output::Text {
                format!("{}\n{text}", "─".repeat(40))
            } else {
                text.clone()
            };
            if out
                .write_all(frame.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                // The reader went away (a closed pipe).
                return 0;
            }
            last = text;
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return 0,
        }
    }
}

/// `history`.
pub async fn history(args: HistoryArgs) -> u8 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (client, scope) = match connect(&args.target).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot reach Kubernetes: {e}");
            return EXIT_UNREADABLE;
        }
    };
    match read::report(&client, &scope, args.limit).await {
        Ok(r) => {
            match args.target.output {
                Output::Json => {
                    println!("{}", serde_json::to_string(&r.recent).unwrap_or_default())
                }
                Output::Text => print!("{}", render::history(&r, style())),
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            EXIT_UNREADABLE
        }
    }
}
