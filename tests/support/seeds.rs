//! Seeds for the simulation suites: read from the environment, derived from a base.

use tickraft::sim::SimRng;

/// A `u64` from environment variable `name`, decimal or `0x` hex. A malformed value stops the test run
/// with the variable named: replaying the wrong seed silently would be worse.
pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value} is not a u64")))
}

/// The `i`-th seed derived from `base`.
pub fn derive_seed(base: u64, i: u64) -> u64 {
    SimRng::new(base.wrapping_add(i)).next_u64()
}
