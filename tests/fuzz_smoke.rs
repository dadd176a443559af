//! A quick fuzz smoke for the test command: every fuzz target (`deploy_watchdog::fuzzing`) is run
//! on its committed seeds (`fuzz/seeds/`) and on thousands of deterministic mutations of them.
//! It needs no sanitizer build, so it runs in seconds; long coverage-guided runs are cargo-fuzz's
//! (`fuzz/README.md`).

use std::path::PathBuf;

use deploy_watchdog::fuzzing::TARGETS;

const MUTATIONS_PER_TARGET: usize = 3_000;

/// xorshift64*: a fixed sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Tokens that tend to break parsers of JSON, YAML, PromQL and Datadog queries.
const TOKENS: [&[u8]; 16] = [
    b"NaN",
    b"+Inf",
    b"-1",
    b"1e309",
    b"null",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b"\n- ",
    b"&a *a",
    b"!!binary",
    b"\x00",
    b"\xff\xfe",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(16)).min(len);
                input.drain(a..b);
            }
            4 if len > 0 => {
                // Repeat a slice: nesting and long runs.
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let piece = input[a..b].repeat(1 + rng.below(64));
                input.splice(b..b, piece);
            }
            5 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let at = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => input.truncate(rng.below(len + 1)),
        }
    }
    input.truncate(64 * 1024);
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

#[test]
fn every_fuzz_target_survives_its_seeds_and_their_mutations() {
    for &(name, target) in TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "fuzz/seeds/{name} has no seed");
        for s in &seeds {
            target(s);
        }
        let mut rng =
            Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64 ^ (name.as_bytes()[0] as u64) << 32);
        for _ in 0..MUTATIONS_PER_TARGET {
            let mut input = seeds[rng.below(seeds.len())].clone();
            mutate(&mut rng, &seeds, &mut input);
            target(&input);
        }
    }
}

/// Unclosed or absurdly deep nesting in every syntax the parsers read.
fn deeply_nested() -> Vec<String> {
    ["[", "{\"a\":", "- ", "a: {"]
        .iter()
        .map(|open| open.repeat(5_000))
        .collect()
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    use deploy_watchdog::config::{Config, HealthConfig};
    use deploy_watchdog::judge::HealthSample;
    use deploy_watchdog::probes::{datadog, health, prometheus};
    #[cfg(feature = "sim")]
    use deploy_watchdog::sim::{scenario::Scenario, services::datadog_query};

    for input in deeply_nested() {
        let what = &input[..8];
        let bytes = input.as_bytes();
        // Every target returns (no stack overflow, no panic)…
        for &(_, target) in TARGETS {
            target(bytes);
        }
        // …and each parser refuses the input rather than accepting something from it.
        assert!(
            matches!(
                health::parse(&HealthConfig::default(), bytes),
                HealthSample::Failed(_)
            ),
            "health body {what}…"
        );
        assert!(
            matches!(
                prometheus::parse(200, bytes),
                prometheus::QueryResult::Failed(_)
            ),
            "Prometheus answer {what}…"
        );
        assert!(
            datadog::parse(200, bytes, 2)
                .iter()
                .all(|r| matches!(r, prometheus::QueryResult::Failed(_))),
            "Datadog answer {what}…"
        );
        #[cfg(feature = "sim")]
        assert!(
            datadog_query::parse(&input).is_err(),
            "Datadog query {what}…"
        );
        assert!(Config::from_yaml(&input).is_err(), "config file {what}…");
        #[cfg(feature = "sim")]
        assert!(
            Scenario::parse(&input, "deep.yaml").is_err(),
            "scenario file {what}…"
        );
        let annotations = std::collections::BTreeMap::from([(
            "deploy-watchdog.io/smoke".to_string(),
            input.clone(),
        )]);
        assert!(
            deploy_watchdog::overrides::effective(&Config::default(), "prod", "app", &annotations)
                .is_err(),
            "smoke annotation {what}…"
        );
    }
}
