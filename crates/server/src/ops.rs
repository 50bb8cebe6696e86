//! The text syntax of `synod propose --op`: one op per argument.
//!
//! ```text
//! put KEY VALUE              value: the rest of the argument, as UTF-8 bytes
//! get KEY
//! delete KEY
//! cas KEY VERSION VALUE      VERSION 0: the key must be absent
//! set-stock KEY QTY
//! reserve KEY QTY
//! release KEY QTY
//! claim KEY AGENT TTL        TTL in ms, or with a unit: 500ms, 30s, 1.5s, 2m
//! release-claim KEY AGENT
//! ```

use std::fmt;
use synod_decision::Op;

/// The syntax, for help texts and errors.
pub const SYNTAX: &str = "put KEY VALUE | get KEY | delete KEY | cas KEY VERSION VALUE | \
set-stock KEY QTY | reserve KEY QTY | release KEY QTY | claim KEY AGENT TTL | release-claim KEY AGENT";

/// An op that does not parse; names the op and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpParseError {
    /// The op as given.
    pub op: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for OpParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op {:?}: {} (ops: {SYNTAX})", self.op, self.reason)
    }
}

impl std::error::Error for OpParseError {}

/// Parses one op.
pub fn parse_op(text: &str) -> Result<Op, OpParseError> {
    let err = |reason: String| OpParseError {
        op: text.to_string(),
        reason,
    };
    let mut rest = text.trim();
    let verb = word(&mut rest).ok_or_else(|| err("empty op".into()))?;
    let arity = |n: usize, usage: &str| err(format!("{verb} takes {n} argument(s): {usage}"));
    // Takes the next word, or fails with the usage.
    macro_rules! arg {
        ($n:expr, $usage:expr) => {
            word(&mut rest).ok_or_else(|| arity($n, $usage))?
        };
    }
    let number = |name: &str, s: &str| {
        s.parse::<u64>()
            .map_err(|_| err(format!("{name} must be a non-negative integer, got {s:?}")))
    };
    let op = match verb {
        "put" => {
            let key = arg!(2, "put KEY VALUE");
            if rest.is_empty() {
                return Err(arity(2, "put KEY VALUE"));
            }
            let value = std::mem::take(&mut rest);
            Op::put(key, value.as_bytes().to_vec())
        }
        "get" => Op::get(arg!(1, "get KEY")),
        "delete" => Op::Delete {
            key: arg!(1, "delete KEY").into(),
        },
        "cas" => {
            let key = arg!(3, "cas KEY VERSION VALUE");
            let version = number("VERSION", arg!(3, "cas KEY VERSION VALUE"))?;
            if rest.is_empty() {
                return Err(arity(3, "cas KEY VERSION VALUE"));
            }
            Op::Cas {
                key: key.into(),
                expected_version: version,
                value: std::mem::take(&mut rest).as_bytes().to_vec(),
            }
        }
        "set-stock" | "reserve" | "release" => {
            let usage = format!("{verb} KEY QTY");
            let key = arg!(2, &usage).into();
            let qty = number("QTY", arg!(2, &usage))?;
            match verb {
                "set-stock" => Op::SetStock { key, qty },
                "reserve" => Op::Reserve { key, qty },
                _ => Op::Release { key, qty },
            }
        }
        "claim" => {
            let usage = "claim KEY AGENT TTL";
            let key = arg!(3, usage).into();
            let agent = arg!(3, usage).to_string();
            let ttl = arg!(3, usage);
            let ttl_ms = parse_duration_ms(ttl).map_err(|e| err(format!("TTL: {e}")))?;
            Op::Claim { key, agent, ttl_ms }
        }
        "release-claim" => {
            let usage = "release-claim KEY AGENT";
            Op::ReleaseClaim {
                key: arg!(2, usage).into(),
                agent: arg!(2, usage).to_string(),
            }
        }
        other => return Err(err(format!("unknown op {other:?}"))),
    };
    if !rest.is_empty() {
        return Err(err(format!("unexpected {rest:?} after the op")));
    }
    Ok(op)
}

/// Takes the next whitespace-separated word off `rest`.
fn word<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let s = rest.trim_start();
    if s.is_empty() {
        *rest = s;
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    let (w, tail) = s.split_at(end);
    *rest = tail.trim_start();
    Some(w)
}

/// `1500` (ms), `1500ms`, `30s`, `1.5s`, `2m` → milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 1500, 1500ms, 1.5s, 2m)");
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return s.parse::<u64>().map_err(|_| bad());
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let ms = (v * scale).round();
    if !(0.0..=(u64::MAX as f64)).contains(&ms) {
        return Err(bad());
    }
    Ok(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_parses() {
        assert_eq!(
            parse_op("put k hello world").unwrap(),
            Op::put("k", b"hello world".to_vec())
        );
        assert_eq!(parse_op("  get   k ").unwrap(), Op::get("k"));
        assert_eq!(
            parse_op("delete k").unwrap(),
            Op::Delete { key: "k".into() }
        );
        assert_eq!(
            parse_op("cas k 0 v").unwrap(),
            Op::Cas {
                key: "k".into(),
                expected_version: 0,
                value: b"v".to_vec()
            }
        );
        assert_eq!(
            parse_op("set-stock sku-42 10").unwrap(),
            Op::SetStock {
                key: "sku-42".into(),
                qty: 10
            }
        );
        assert_eq!(
            parse_op("reserve sku-42 1").unwrap(),
            Op::Reserve {
                key: "sku-42".into(),
                qty: 1
            }
        );
        assert_eq!(
            parse_op("release sku-42 1").unwrap(),
            Op::Release {
                key: "sku-42".into(),
                qty: 1
            }
        );
        assert_eq!(
            parse_op("claim truck/17 agent-a 30s").unwrap(),
            Op::Claim {
                key: "truck/17".into(),
                agent: "agent-a".into(),
                ttl_ms: 30_000
            }
        );
        assert_eq!(
            parse_op("release-claim truck/17 agent-a").unwrap(),
            Op::ReleaseClaim {
                key: "truck/17".into(),
                agent: "agent-a".into()
            }
        );
    }

    #[test]
    fn serialises_in_the_wire_form() {
        let json = serde_json::to_string(&parse_op("set-stock sku-42 10").unwrap()).unwrap();
        assert_eq!(json, r#"{"SetStock":{"key":"sku-42","qty":10}}"#);
    }

    #[test]
    fn errors_name_the_op_and_the_problem() {
        for (op, want) in [
            ("", "empty op"),
            ("frobnicate k", "unknown op \"frobnicate\""),
            ("put k", "put takes 2 argument(s)"),
            ("reserve sku-42", "reserve KEY QTY"),
            (
                "reserve sku-42 -1",
                "QTY must be a non-negative integer, got \"-1\"",
            ),
            ("cas k x v", "VERSION"),
            ("get k extra", "unexpected \"extra\""),
            ("claim k a soon", "TTL"),
        ] {
            let e = parse_op(op).unwrap_err();
            assert_eq!(e.op, op);
            assert!(e.to_string().contains(want), "{op:?}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("1500"), Ok(1500));
        assert_eq!(parse_duration_ms("1500ms"), Ok(1500));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        for bad in ["", "s", "-1s", "1h", "1e3s", "x"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
