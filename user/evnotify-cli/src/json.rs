//! The JSON output (`-j`, `--pretty`): its schema version, and the JSON Lines events of
//! `timer`, `signal` and `watch`.

use anyhow::Result;
use serde_json::{json, Value};
use std::time::Duration;

/// The version of the JSON output's layout, in every object as `schema_version`: within a
/// version the field names and their meaning are stable (a field may be added); renaming or
/// removing one bumps it.
const SCHEMA_VERSION: u32 = 1;

/// How results are printed: text, or JSON (`-j`), compact unless `--pretty`.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub pretty: bool,
}

impl Output {
    /// One JSON object, with `schema_version`, on one line (or indented with `--pretty`).
    fn render(self, mut v: Value) -> Result<String> {
        if let Value::Object(m) = &mut v {
            m.insert("schema_version".into(), SCHEMA_VERSION.into());
        }
        Ok(if self.pretty {
            serde_json::to_string_pretty(&v)?
        } else {
            serde_json::to_string(&v)?
        })
    }

    /// Prints [`Output::render`]'s object (stdout is flushed at each line: a reader of the
    /// JSON Lines gets each event as it comes).
    pub fn emit(self, v: Value) -> Result<()> {
        println!("{}", self.render(v)?);
        Ok(())
    }
}

/// Nanoseconds, for the JSON's `_ns` fields (saturating: a day is far below 2^64 ns).
pub fn nanos(d: Duration) -> u64 {
    d.as_nanos().try_into().unwrap_or(u64::MAX)
}

/// A JSON Lines event of `timer`: `count` ticks arrived on `slot`, `total` in all.
pub fn ticks_record(elapsed: Duration, slot: u32, count: u64, total: u64) -> Value {
    json!({"type": "ticks", "elapsed_ns": nanos(elapsed), "slot": slot, "ticks": count, "total": total})
}

/// A JSON Lines event of `watch`: `count` notifications on `slot`, from its `source`.
pub fn notify_record(elapsed: Duration, source: &str, slot: u32, count: u64) -> Value {
    json!({"type": "notify", "elapsed_ns": nanos(elapsed), "source": source, "slot": slot, "count": count})
}

/// A JSON Lines event of `signal`: one signal received, with its `si_code`.
pub fn signal_record(elapsed: Duration, signo: i32, code: i32) -> Value {
    json!({"type": "signal", "elapsed_ns": nanos(elapsed), "signo": signo, "code": code})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compact JSON is one line per object, pretty JSON several; both carry the schema
    /// version. The events of timer, signal and watch have their type, and integer times.
    #[test]
    fn json_is_compact_or_pretty_and_versioned() {
        let compact = Output {
            json: true,
            pretty: false,
        };
        let pretty = Output {
            json: true,
            pretty: true,
        };
        let t = Duration::from_micros(1500);
        let line = compact.render(ticks_record(t, 3, 2, 7)).unwrap();
        assert!(!line.contains('\n'), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({"schema_version": SCHEMA_VERSION, "type": "ticks", "elapsed_ns": 1_500_000,
                   "slot": 3, "ticks": 2, "total": 7})
        );
        let text = pretty.render(notify_record(t, "kick", 1, 4)).unwrap();
        assert!(text.lines().count() > 3, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"schema_version": SCHEMA_VERSION, "type": "notify", "elapsed_ns": 1_500_000,
                   "source": "kick", "slot": 1, "count": 4})
        );
        let v = compact.render(signal_record(t, 35, -4)).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&v).unwrap(),
            json!({"schema_version": SCHEMA_VERSION, "type": "signal", "elapsed_ns": 1_500_000,
                   "signo": 35, "code": -4})
        );
    }
}
