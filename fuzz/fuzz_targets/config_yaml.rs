//! The config loader: any text is a config or an error naming a field, never a panic.
#![no_main]

use deploy_watchdog::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::from_yaml(text) {
            // A config that loads must also build a judge policy.
            let _ = deploy_watchdog::judge::Policy::from_config(&config);
        }
    }
});
