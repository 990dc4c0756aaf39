//! The log level `CONFIG SET loglevel` changes: Redis's names for it, the `tracing` level
//! each one lets through, and the process's hook into its log subscriber.
//!
//! The subscriber belongs to the binary, which sets it up before any node starts, and it is
//! the whole process's (tracing's global default). So the hook is process-wide too: the
//! binary calls [`install`] once with the level its filter lets through at start and a
//! function that replaces that filter (a `tracing-subscriber` reload handle); `CONFIG SET
//! loglevel` then calls [`set`], and `CONFIG GET loglevel` reads [`level`].
//!
//! | Redis `loglevel` | `tracing` lets through |
//! | --- | --- |
//! | `debug` | everything (`trace` and up) |
//! | `verbose` | `debug` and up |
//! | `notice` | `info` and up (the default, as Redis's) |
//! | `warning` | `warn` and up |
//! | `nothing` | nothing |
//!
//! CAVEATS
//! - A new level replaces the whole filter: module directives given in `RUST_LOG`
//!   (`replikv_core=debug,info`) are gone after a `CONFIG SET loglevel`.
//! - At start, `loglevel` shows the most verbose level `RUST_LOG` lets through anywhere, and
//!   `RUST_LOG=error` shows as `warning` (Redis has no level for errors alone).
//! - Two nodes in one process (tests) share the level, as they share the subscriber.
//! - Without [`install`] (a node run from a library), `CONFIG SET loglevel` is refused.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use tracing::level_filters::LevelFilter;

/// A log level by Redis's name for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything: `tracing`'s `trace` and up.
    Debug,
    /// `debug` and up.
    Verbose,
    /// `info` and up.
    Notice,
    /// `warn` and up.
    Warning,
    /// Nothing at all.
    Nothing,
}

/// The names `loglevel` takes, for error messages.
const LOG_LEVEL_NAMES: &str = "debug, verbose, notice, warning, nothing";

impl LogLevel {
    /// What `tracing` lets through at this level.
    pub fn level_filter(self) -> LevelFilter {
        match self {
            LogLevel::Debug => LevelFilter::TRACE,
            LogLevel::Verbose => LevelFilter::DEBUG,
            LogLevel::Notice => LevelFilter::INFO,
            LogLevel::Warning => LevelFilter::WARN,
            LogLevel::Nothing => LevelFilter::OFF,
        }
    }

    /// The level that lets through what `filter` does (`error` reads as `warning`).
    pub fn of(filter: LevelFilter) -> LogLevel {
        match filter {
            LevelFilter::TRACE => LogLevel::Debug,
            LevelFilter::DEBUG => LogLevel::Verbose,
            LevelFilter::INFO => LogLevel::Notice,
            LevelFilter::OFF => LogLevel::Nothing,
            _ => LogLevel::Warning,
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    /// Redis's names, in any case (Redis's own error when none matches).
    fn from_str(s: &str) -> Result<LogLevel, String> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "verbose" => Ok(LogLevel::Verbose),
            "notice" => Ok(LogLevel::Notice),
            "warning" => Ok(LogLevel::Warning),
            "nothing" => Ok(LogLevel::Nothing),
            _ => Err(format!("argument(s) must be one of the following: {LOG_LEVEL_NAMES}")),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Debug => "debug",
            LogLevel::Verbose => "verbose",
            LogLevel::Notice => "notice",
            LogLevel::Warning => "warning",
            LogLevel::Nothing => "nothing",
        })
    }
}

/// Replaces the process's log filter with one that lets through what the argument does; an
/// error says why it could not.
pub type SetFilter = Box<dyn Fn(LevelFilter) -> Result<(), String> + Send + Sync>;

/// The installed hook and the level it last set.
struct Hook {
    level: Mutex<LogLevel>,
    set: SetFilter,
}

/// The process's hook, once the binary installs it.
static HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs the process's hook: `current` is what its filter lets through now, `set` replaces
/// the filter. False if one was installed already (the first stays).
pub fn install(current: LevelFilter, set: SetFilter) -> bool {
    HOOK.set(Hook { level: Mutex::new(LogLevel::of(current)), set }).is_ok()
}

/// The level now; `None` when no hook is installed.
pub fn level() -> Option<LogLevel> {
    HOOK.get().map(|hook| *hook.level.lock().unwrap())
}

/// Changes the process's log level; an error when no hook is installed or the subscriber
/// refused the new filter (then the level is unchanged).
pub fn set(level: LogLevel) -> Result<(), String> {
    let hook = HOOK.get().ok_or("this process has no reloadable log filter (it was not started by `replikv node`)")?;
    let mut now = hook.level.lock().unwrap();
    (hook.set)(level.level_filter())?;
    *now = level;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_names_map_to_tracing_levels_and_back() {
        let table = [
            ("debug", LevelFilter::TRACE),
            ("verbose", LevelFilter::DEBUG),
            ("notice", LevelFilter::INFO),
            ("warning", LevelFilter::WARN),
            ("nothing", LevelFilter::OFF),
        ];
        for (name, filter) in table {
            let level: LogLevel = name.parse().unwrap();
            assert_eq!(level.level_filter(), filter, "{name}");
            assert_eq!(LogLevel::of(filter), level, "{name}");
            assert_eq!(level.to_string(), name);
        }
        assert_eq!("NOTICE".parse(), Ok(LogLevel::Notice), "any case, as Redis");
        assert_eq!(LogLevel::of(LevelFilter::ERROR), LogLevel::Warning);
        let err = "info".parse::<LogLevel>().unwrap_err();
        assert!(err.contains("debug, verbose, notice, warning, nothing"), "{err}");
    }
}
