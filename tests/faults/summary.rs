//! One line per fault test, for `scripts/faults`: what was done to the service, how often, and
//! what the receivers saw.

use std::io::Write;

#[derive(serde::Serialize)]
pub struct Trial {
    pub fault: &'static str,
    pub trials: usize,
    pub reports: usize,
    pub deliveries: usize,
    pub lost: usize,
    pub duplicates: usize,
}

impl Trial {
    /// Appends this result as a JSON line to `REPDIST_TEST_FAULT_SUMMARY`, if that is set.
    pub fn record(&self) {
        let Ok(path) = std::env::var("REPDIST_TEST_FAULT_SUMMARY") else { return };
        let line = serde_json::to_string(self).expect("a trial serializes");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("summary file opens");
        writeln!(file, "{line}").expect("summary line written");
    }
}

/// A count from the environment (`scripts/faults` raises them for a soak), or `default`.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
