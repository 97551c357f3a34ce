//! Per-group configuration, measured in ticks and bytes, with checks derived by `validator`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

use crate::error::ConfigError;

/// How the leader confirms that it is still the leader before serving a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ReadMode {
    /// ReadIndex (Raft thesis §6.4): the leader records its commit index and serves the read once a
    /// quorum has answered a heartbeat sent after the read arrived. Safe under any clock behaviour.
    #[default]
    Safe,
    /// Lease reads: the leader serves at once while its check-quorum lease holds. Faster, but correct
    /// only while clocks drift by less than the election timeout. Requires `check_quorum`.
    Lease,
}

/// Configuration of one Raft group replica. All durations are in ticks of the caller's clock.
///
/// ```
/// use tickraft::Config;
///
/// let config = Config { heartbeat_ticks: 3, ..Config::default() }.validated().unwrap();
/// assert_eq!(config.heartbeat_ticks, 3);
///
/// let err = Config { heartbeat_ticks: 0, ..Config::default() }.validated().unwrap_err();
/// assert_eq!(err.field(), "heartbeat_ticks");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[validate(schema(function = "check_cross_field_rules", skip_on_field_errors = true))]
pub struct Config {
    /// The lower bound (inclusive) of the randomized election timeout.
    #[validate(range(min = 2, message = "must be at least 2"))]
    pub election_timeout_min_ticks: u32,
    /// The upper bound (exclusive) of the randomized election timeout; must exceed the lower bound by at
    /// least 2, so that timeouts actually vary (a range of one value keeps replicas in lockstep and splits
    /// every vote). A wide range (etcd uses `[min, 2 * min)`) converges fastest.
    #[validate(range(min = 3, message = "must be at least 3"))]
    pub election_timeout_max_ticks: u32,
    /// How often a leader sends heartbeats; must be below `election_timeout_min_ticks`.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub heartbeat_ticks: u32,
    /// How many append messages may be in flight to one follower before the leader waits for acks.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub max_inflight_appends: usize,
    /// The byte budget of entries in one append message (at least one entry is always sent).
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub max_append_bytes: usize,
    /// The byte budget of one snapshot chunk. A snapshot travels one chunk per round trip, so keep this
    /// large (the default is 1 MiB); each chunk is checksummed and a lost one is resent, not the whole.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub max_snapshot_chunk_bytes: usize,
    /// Proposals are refused while the leader's uncommitted entries exceed this many bytes.
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub max_uncommitted_bytes: usize,
    /// The byte budget of committed entries handed out in one `Ready` (at least one entry is always given).
    #[validate(range(min = 1, message = "must be at least 1"))]
    pub max_apply_bytes: usize,
    /// Run a pre-vote round before an election, so that a node that was partitioned away cannot disrupt a
    /// healthy leader when it comes back (Raft thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down, and followers
    /// ignore vote requests while their leader's lease is fresh.
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// Send every follower an (empty if need be) append as soon as the commit index moves, so that
    /// followers apply without waiting for the next append or heartbeat (etcd's behaviour). Off, the
    /// commit index rides on the next append or heartbeat: one message per follower per commit less,
    /// which is most of a follower's work under load; clients never wait for followers to apply.
    pub broadcast_commit: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_timeout_min_ticks: 10,
            election_timeout_max_ticks: 20,
            heartbeat_ticks: 2,
            max_inflight_appends: 256,
            max_append_bytes: 1024 * 1024,
            max_snapshot_chunk_bytes: 1024 * 1024,
            max_uncommitted_bytes: 64 * 1024 * 1024,
            max_apply_bytes: 4 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            broadcast_commit: false,
        }
    }
}

/// A `Config` that has passed validation. The core only accepts this type, so an unchecked config cannot
/// reach it. Cloning is cheap (shared), so many groups can hold the same configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidConfig(std::sync::Arc<Config>);

impl std::ops::Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.0
    }
}

impl Config {
    /// Checks every rule and returns the config in a form the core accepts, or the first broken rule
    /// (fields in declaration order, then the rules that relate several fields).
    pub fn validated(self) -> Result<ValidConfig, ConfigError> {
        match self.validate() {
            Ok(()) => Ok(ValidConfig(std::sync::Arc::new(self))),
            Err(errors) => Err(first_error(&errors)),
        }
    }
}

const FIELD_ORDER: &[&str] = &[
    "election_timeout_min_ticks",
    "election_timeout_max_ticks",
    "heartbeat_ticks",
    "max_inflight_appends",
    "max_append_bytes",
    "max_snapshot_chunk_bytes",
    "max_uncommitted_bytes",
    "max_apply_bytes",
];

fn first_error(errors: &validator::ValidationErrors) -> ConfigError {
    let fields = errors.field_errors();
    for name in FIELD_ORDER {
        if let Some(error) = fields.get(*name).and_then(|list| list.first()) {
            return ConfigError::new(name, describe(error));
        }
    }
    // Cross-field rules put the offending field's name in the error code.
    for (_, list) in fields.iter() {
        if let Some(error) = list.first() {
            return ConfigError::new(error.code.as_ref(), describe(error));
        }
    }
    ConfigError::new("config", "invalid".to_string())
}

fn describe(error: &ValidationError) -> String {
    match &error.message {
        Some(message) => message.to_string(),
        None => error.code.to_string(),
    }
}

fn rule(field: &'static str, message: &'static str) -> ValidationError {
    ValidationError::new(field).with_message(Cow::Borrowed(message))
}

fn check_cross_field_rules(config: &Config) -> Result<(), ValidationError> {
    if config.election_timeout_max_ticks < config.election_timeout_min_ticks + 2 {
        return Err(rule(
            "election_timeout_max_ticks",
            "must be at least election_timeout_min_ticks + 2 (the randomized range needs two values)",
        ));
    }
    if config.election_timeout_min_ticks <= config.heartbeat_ticks {
        return Err(rule(
            "election_timeout_min_ticks",
            "must be greater than heartbeat_ticks",
        ));
    }
    if config.read_mode == ReadMode::Lease && !config.check_quorum {
        return Err(rule(
            "read_mode",
            "lease reads require check_quorum to be enabled",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert!(Config::default().validated().is_ok());
    }

    #[test]
    fn invalid_configs_are_rejected_with_the_field_named() {
        let cases: Vec<(Config, &str, &str)> = vec![
            (
                Config {
                    heartbeat_ticks: 0,
                    ..Config::default()
                },
                "heartbeat_ticks",
                "at least 1",
            ),
            (
                Config {
                    max_inflight_appends: 0,
                    ..Config::default()
                },
                "max_inflight_appends",
                "at least 1",
            ),
            (
                Config {
                    election_timeout_min_ticks: 10,
                    election_timeout_max_ticks: 10,
                    ..Config::default()
                },
                "election_timeout_max_ticks",
                "at least election_timeout_min_ticks + 2",
            ),
            (
                Config {
                    election_timeout_min_ticks: 10,
                    election_timeout_max_ticks: 11,
                    ..Config::default()
                },
                "election_timeout_max_ticks",
                "two values",
            ),
            (
                Config {
                    heartbeat_ticks: 10,
                    election_timeout_min_ticks: 10,
                    election_timeout_max_ticks: 20,
                    ..Config::default()
                },
                "election_timeout_min_ticks",
                "greater than heartbeat_ticks",
            ),
            (
                Config {
                    read_mode: ReadMode::Lease,
                    check_quorum: false,
                    ..Config::default()
                },
                "read_mode",
                "check_quorum",
            ),
            (
                Config {
                    max_append_bytes: 0,
                    ..Config::default()
                },
                "max_append_bytes",
                "at least 1",
            ),
        ];
        for (config, field, rule) in cases {
            let err = config.validated().expect_err(field);
            assert_eq!(err.field(), field);
            assert!(err.rule().contains(rule), "{field}: {}", err.rule());
            assert!(err.to_string().contains(field));
        }
    }
}
