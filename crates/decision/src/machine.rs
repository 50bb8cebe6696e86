//! The state machine: keys, versions, sessions; apply, digest, snapshot.

use crate::codec::{digest_of, read_snapshot, write_snapshot, SnapshotError};
use crate::decision::{Decision, Guard, Op, MAX_KEY_BYTES, RESERVED_KEY_PREFIX};
use crate::outcome::{ClaimState, Failure, Kind, OpResult, Outcome, Reason, Value};
use crate::session::session_key;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use synod_types::{Access, ClientId, Command, Key};

/// Domain tag mixed into [`StateMachine::digest`]; bump with the layout.
const DIGEST_DOMAIN: &[u8] = b"synod-decision/state/v1";

/// The decision state machine (architecture.md §4).
///
/// Deterministic: the same commands applied in the same per-key order give
/// the same outcomes and the same [`digest`](StateMachine::digest) on every
/// replica. All maps are `BTreeMap`s, so no hash order leaks anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// Every key ever written. A deleted key stays as a tombstone
    /// (`value: None`) holding its version, so a re-created key continues
    /// from the old version instead of restarting at 1: a `Cas` or
    /// `Version` guard prepared against the old incarnation can then never
    /// succeed against the new one (no ABA). The cost is one small record
    /// per deleted key.
    entries: BTreeMap<Key, Entry>,
    /// Per-client dedup watermark: created by a client's first command that
    /// declares its session key, replaced by each later one; never evicted
    /// (eviction would need a deterministic rule, e.g. a control-plane
    /// command, and is future work).
    sessions: BTreeMap<ClientId, Session>,
}

/// The serialized form of a [`StateMachine`], used by the digest and by
/// snapshots. Private, so the only way to build a state machine from bytes
/// is [`StateMachine::restore`], which checks invariants.
#[derive(Serialize)]
struct Image<'a> {
    entries: &'a BTreeMap<Key, Entry>,
    sessions: &'a BTreeMap<ClientId, Session>,
}

/// Owned counterpart of [`Image`]; the same encoding.
#[derive(Deserialize)]
struct OwnedImage {
    entries: BTreeMap<Key, Entry>,
    sessions: BTreeMap<ClientId, Session>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// Incremented by every write of the key, including deletes; ≥ 1.
    version: u64,
    /// `None` for a tombstone.
    value: Option<Value>,
}

impl Entry {
    /// Version as clients see it: 0 when the key is absent.
    fn visible_version(&self) -> u64 {
        if self.value.is_some() {
            self.version
        } else {
            0
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// Highest request number applied for this client.
    last_request: u64,
    /// Its outcome, returned verbatim to a retry.
    outcome: Outcome,
}

impl StateMachine {
    /// An empty state machine.
    pub fn new() -> StateMachine {
        StateMachine::default()
    }

    /// Executes one committed command: session de-duplication, body
    /// decoding, key-declaration check, then the decision.
    ///
    /// In order:
    /// 1. a command that does not declare `(session_key(client), Write)` is
    ///    rejected with [`Reason::MissingSessionKey`] without reading or
    ///    writing session state (without that key it is not ordered against
    ///    the client's other commands; see [`crate::command`]);
    /// 2. if `request` equals the client's last applied request, the
    ///    recorded outcome is returned and nothing is applied (a retry);
    ///    if it is lower, [`Reason::StaleRequest`] (not recorded);
    /// 3. an undecodable body, an invalid decision, or a decision touching
    ///    a key the command did not declare with enough access is rejected;
    /// 4. otherwise the decision is applied ([`StateMachine::apply_decision`]).
    ///
    /// The outcomes of steps 3 and 4 are recorded as the client's new
    /// watermark.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        if cmd.client == crate::READ_ONLY_CLIENT {
            return self.apply_read_only(cmd);
        }
        let session = session_key(cmd.client);
        let declares_session = cmd
            .keys
            .iter()
            .any(|(key, access)| *key == session && *access == Access::Write);
        if !declares_session {
            return Outcome::rejected(Reason::MissingSessionKey);
        }
        if let Some(s) = self.sessions.get(&cmd.client) {
            if cmd.request == s.last_request {
                return s.outcome.clone();
            }
            if cmd.request < s.last_request {
                return Outcome::rejected(Reason::StaleRequest {
                    last_applied: s.last_request,
                });
            }
        }
        let outcome = match Decision::decode(&cmd.body) {
            Err(e) => Outcome::rejected(Reason::Undecodable(e)),
            Ok(d) => match d.validate() {
                Err(e) => Outcome::rejected(Reason::Invalid(e)),
                Ok(()) => match undeclared_key(cmd, &d) {
                    Some((key, access)) => Outcome::rejected(Reason::UndeclaredKey { key, access }),
                    None => self.apply_valid(&d),
                },
            },
        };
        self.sessions.insert(
            cmd.client,
            Session {
                last_request: cmd.request,
                outcome: outcome.clone(),
            },
        );
        outcome
    }

    /// A sessionless command ([`crate::read_command`]): applied only if
    /// every op is a `Get`, and never recorded, so executing it twice (or on
    /// some replicas only) leaves every replica's state identical.
    fn apply_read_only(&mut self, cmd: &Command) -> Outcome {
        match Decision::decode(&cmd.body) {
            Err(e) => Outcome::rejected(Reason::Undecodable(e)),
            Ok(d) => match d.validate() {
                Err(e) => Outcome::rejected(Reason::Invalid(e)),
                Ok(()) if !d.ops.iter().all(|op| matches!(op, crate::Op::Get { .. })) => {
                    Outcome::rejected(Reason::SessionRequired)
                }
                Ok(()) => match undeclared_key(cmd, &d) {
                    Some((key, access)) => Outcome::rejected(Reason::UndeclaredKey { key, access }),
                    None => self.apply_valid(&d),
                },
            },
        }
    }

    /// Applies a decision with no session: validate, check every guard
    /// against the current state, run the ops in order on a staged copy of
    /// the touched keys, and commit only if all succeeded (all-or-nothing).
    ///
    /// Reads only the keys the decision names, and time only from
    /// `d.issued_at_ms`, so the result is independent of decisions on other
    /// keys. Used directly by the history checker's model.
    pub fn apply_decision(&mut self, d: &Decision) -> Outcome {
        match d.validate() {
            Err(e) => Outcome::rejected(Reason::Invalid(e)),
            Ok(()) => self.apply_valid(d),
        }
    }

    fn apply_valid(&mut self, d: &Decision) -> Outcome {
        let now_ms = d.issued_at_ms;
        for (index, guard) in d.guards.iter().enumerate() {
            let entry = self.entries.get(guard.key());
            if let Err(failure) = check_guard(entry, guard, now_ms) {
                return Outcome::rejected(Reason::GuardFailed {
                    guard: index,
                    key: guard.key().clone(),
                    failure,
                });
            }
        }
        let mut txn = Txn {
            base: &self.entries,
            writes: BTreeMap::new(),
        };
        let mut results = Vec::with_capacity(d.ops.len());
        for (index, op) in d.ops.iter().enumerate() {
            match txn.apply(op, now_ms) {
                Ok(result) => results.push(result),
                Err(failure) => {
                    return Outcome::rejected(Reason::OpFailed {
                        op: index,
                        key: op.key().clone(),
                        failure,
                    })
                }
            }
        }
        let writes = txn.writes;
        for (key, entry) in writes {
            assert!(entry.version >= 1, "a written key has version >= 1");
            self.entries.insert(key, entry);
        }
        assert_eq!(results.len(), d.ops.len(), "one result per op");
        Outcome::Applied { results }
    }

    /// The value of `key`, `None` if absent.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.entries.get(key).and_then(|e| e.value.as_ref())
    }

    /// The version of `key` as clients see it; 0 if absent.
    pub fn version(&self, key: &str) -> u64 {
        self.entries.get(key).map_or(0, Entry::visible_version)
    }

    /// The stock of the counter at `key`, `None` if absent or not a counter.
    pub fn stock(&self, key: &str) -> Option<u64> {
        match self.value(key) {
            Some(Value::Stock(s)) => Some(*s),
            _ => None,
        }
    }

    /// The claim at `key` (expired or not), `None` if absent or not a claim.
    pub fn claim(&self, key: &str) -> Option<&ClaimState> {
        match self.value(key) {
            Some(Value::Claim(c)) => Some(c),
            _ => None,
        }
    }

    /// Live keys in key order, with their versions and values.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, u64, &Value)> + '_ {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.value.as_ref().map(|v| (k, e.version, v)))
    }

    /// `client`'s watermark: its last applied request number and the
    /// recorded outcome.
    pub fn session(&self, client: ClientId) -> Option<(u64, &Outcome)> {
        self.sessions
            .get(&client)
            .map(|s| (s.last_request, &s.outcome))
    }

    /// A deterministic 64-bit digest of the full state (keys, versions,
    /// tombstones, sessions), for comparing replicas: FNV-1a over the
    /// canonical postcard encoding. Never uses std's randomly seeded hasher.
    pub fn digest(&self) -> u64 {
        digest_of(DIGEST_DOMAIN, &self.image())
    }

    fn image(&self) -> Image<'_> {
        Image {
            entries: &self.entries,
            sessions: &self.sessions,
        }
    }

    /// Serializes the full state:
    /// `"SYNODSM\0" | format version u32 LE | payload length u64 LE |
    /// postcard payload | FNV-1a u64 LE over everything before it`.
    pub fn snapshot(&self) -> Vec<u8> {
        write_snapshot(&self.image())
    }

    /// Restores a state written by [`StateMachine::snapshot`]. Checks magic,
    /// version, length and checksum, parses, then checks state invariants.
    /// Corrupted bytes give an error, never a panic.
    pub fn restore(bytes: &[u8]) -> Result<StateMachine, SnapshotError> {
        let image: OwnedImage = read_snapshot(bytes)?;
        let sm = StateMachine {
            entries: image.entries,
            sessions: image.sessions,
        };
        sm.check_invariants().map_err(SnapshotError::Invalid)?;
        Ok(sm)
    }

    /// Invariants every reachable state satisfies; checked on restore.
    fn check_invariants(&self) -> Result<(), String> {
        for (key, entry) in &self.entries {
            if entry.version == 0 {
                return Err(format!("key {key:?} has version 0"));
            }
            if key.is_empty() || key.len() > MAX_KEY_BYTES || key.starts_with(RESERVED_KEY_PREFIX) {
                return Err(format!("key {key:?} is not a valid user key"));
            }
            if let Some(Value::Claim(c)) = &entry.value {
                if c.holder.is_empty() {
                    return Err(format!("claim on {key:?} has no holder"));
                }
                if c.expires_at_ms <= c.claimed_at_ms && c.expires_at_ms != u64::MAX {
                    return Err(format!("claim on {key:?} expires before it starts"));
                }
            }
        }
        Ok(())
    }
}

/// The first key `d` needs that `cmd` does not declare with enough access
/// (a `Write` declaration covers reads).
fn undeclared_key(cmd: &Command, d: &Decision) -> Option<(Key, Access)> {
    let mut declared: BTreeMap<&Key, Access> = BTreeMap::new();
    for (key, access) in &cmd.keys {
        let slot = declared.entry(key).or_insert(*access);
        *slot = (*slot).max(*access);
    }
    d.conflict_keys()
        .into_iter()
        .find(|(key, access)| declared.get(key).is_none_or(|have| have < access))
}

fn check_guard(entry: Option<&Entry>, guard: &Guard, now_ms: u64) -> Result<(), Failure> {
    let live = entry.and_then(|e| e.value.as_ref());
    match guard {
        Guard::Version { version, .. } => {
            let actual = entry.map_or(0, Entry::visible_version);
            if actual == *version {
                Ok(())
            } else {
                Err(Failure::VersionMismatch {
                    expected: *version,
                    actual,
                })
            }
        }
        Guard::Exists { .. } => live.map(|_| ()).ok_or(Failure::Absent),
        Guard::StockAtLeast { qty, .. } => match live {
            None => Err(Failure::Absent),
            Some(Value::Stock(s)) if s >= qty => Ok(()),
            Some(Value::Stock(s)) => Err(Failure::InsufficientStock {
                requested: *qty,
                available: *s,
            }),
            Some(other) => Err(wrong_type(Kind::Stock, other)),
        },
        Guard::ClaimedBy { agent, .. } => match live {
            None => Err(Failure::NotHolder { holder: None }),
            Some(Value::Claim(c)) if c.is_expired_at(now_ms) => {
                Err(Failure::NotHolder { holder: None })
            }
            Some(Value::Claim(c)) if c.holder == *agent => Ok(()),
            Some(Value::Claim(c)) => Err(Failure::NotHolder {
                holder: Some(c.holder.clone()),
            }),
            Some(other) => Err(wrong_type(Kind::Claim, other)),
        },
    }
}

fn wrong_type(expected: Kind, actual: &Value) -> Failure {
    Failure::WrongType {
        expected,
        actual: actual.kind(),
    }
}

/// The ops of one decision, staged: reads see `writes` first, then `base`;
/// `writes` is committed only if every op succeeds.
struct Txn<'a> {
    base: &'a BTreeMap<Key, Entry>,
    writes: BTreeMap<Key, Entry>,
}

impl Txn<'_> {
    fn entry(&self, key: &Key) -> Option<&Entry> {
        self.writes.get(key).or_else(|| self.base.get(key))
    }

    fn live(&self, key: &Key) -> Option<&Value> {
        self.entry(key).and_then(|e| e.value.as_ref())
    }

    /// Stages a write of `key` and returns its new version.
    fn write(&mut self, key: &Key, value: Option<Value>) -> Result<u64, Failure> {
        let old = self.entry(key).map_or(0, |e| e.version);
        let version = old.checked_add(1).ok_or(Failure::VersionExhausted)?;
        self.writes.insert(key.clone(), Entry { version, value });
        Ok(version)
    }

    /// The stock of counter `key`, or why it is not one.
    fn stock(&self, key: &Key) -> Result<u64, Failure> {
        match self.live(key) {
            None => Err(Failure::Absent),
            Some(Value::Stock(s)) => Ok(*s),
            Some(other) => Err(wrong_type(Kind::Stock, other)),
        }
    }

    /// Ok if `key` may be set to bytes.
    fn bytes_slot(&self, key: &Key) -> Result<(), Failure> {
        match self.live(key) {
            None | Some(Value::Bytes(_)) => Ok(()),
            Some(other) => Err(wrong_type(Kind::Bytes, other)),
        }
    }

    fn apply(&mut self, op: &Op, now_ms: u64) -> Result<OpResult, Failure> {
        match op {
            Op::Put { key, value } => {
                self.bytes_slot(key)?;
                let version = self.write(key, Some(Value::Bytes(value.clone())))?;
                Ok(OpResult::Put { version })
            }
            Op::Get { key } => Ok(OpResult::Get {
                version: self.entry(key).map_or(0, Entry::visible_version),
                value: self.live(key).cloned(),
            }),
            Op::Delete { key } => {
                match self.live(key) {
                    None => return Ok(OpResult::Delete { existed: false }),
                    Some(Value::Claim(c)) if !c.is_expired_at(now_ms) => {
                        return Err(Failure::ClaimHeld {
                            holder: c.holder.clone(),
                            expires_at_ms: c.expires_at_ms,
                        })
                    }
                    Some(_) => {}
                }
                self.write(key, None)?;
                Ok(OpResult::Delete { existed: true })
            }
            Op::Cas {
                key,
                expected_version,
                value,
            } => {
                let actual = self.entry(key).map_or(0, Entry::visible_version);
                if actual != *expected_version {
                    return Err(Failure::VersionMismatch {
                        expected: *expected_version,
                        actual,
                    });
                }
                self.bytes_slot(key)?;
                let version = self.write(key, Some(Value::Bytes(value.clone())))?;
                Ok(OpResult::Cas { version })
            }
            Op::Reserve { key, qty } => {
                let available = self.stock(key)?;
                let Some(remaining) = available.checked_sub(*qty) else {
                    return Err(Failure::InsufficientStock {
                        requested: *qty,
                        available,
                    });
                };
                let version = self.write(key, Some(Value::Stock(remaining)))?;
                Ok(OpResult::Reserve { version, remaining })
            }
            Op::Release { key, qty } => {
                let stock = self.stock(key)?;
                let Some(remaining) = stock.checked_add(*qty) else {
                    return Err(Failure::StockOverflow { stock, added: *qty });
                };
                let version = self.write(key, Some(Value::Stock(remaining)))?;
                Ok(OpResult::Release { version, remaining })
            }
            Op::SetStock { key, qty } => {
                match self.live(key) {
                    None | Some(Value::Stock(_)) => {}
                    Some(other) => return Err(wrong_type(Kind::Stock, other)),
                }
                let version = self.write(key, Some(Value::Stock(*qty)))?;
                Ok(OpResult::SetStock {
                    version,
                    stock: *qty,
                })
            }
            Op::Claim { key, agent, ttl_ms } => {
                match self.live(key) {
                    // Free, expired, or ours (a renewal).
                    None => {}
                    Some(Value::Claim(c)) if c.holder == *agent || c.is_expired_at(now_ms) => {}
                    Some(Value::Claim(c)) => {
                        return Err(Failure::ClaimHeld {
                            holder: c.holder.clone(),
                            expires_at_ms: c.expires_at_ms,
                        })
                    }
                    Some(other) => return Err(wrong_type(Kind::Claim, other)),
                }
                let expires_at_ms = now_ms.saturating_add(*ttl_ms);
                let claim = ClaimState {
                    holder: agent.clone(),
                    claimed_at_ms: now_ms,
                    expires_at_ms,
                };
                let version = self.write(key, Some(Value::Claim(claim)))?;
                Ok(OpResult::Claim {
                    version,
                    holder: agent.clone(),
                    expires_at_ms,
                })
            }
            Op::ReleaseClaim { key, agent } => {
                match self.live(key) {
                    None => return Err(Failure::NotHolder { holder: None }),
                    Some(Value::Claim(c)) if c.holder == *agent => {}
                    Some(Value::Claim(c)) => {
                        let holder = (!c.is_expired_at(now_ms)).then(|| c.holder.clone());
                        return Err(Failure::NotHolder { holder });
                    }
                    Some(other) => return Err(wrong_type(Kind::Claim, other)),
                }
                self.write(key, None)?;
                Ok(OpResult::ReleaseClaim)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_checks_invariants_behind_a_valid_checksum() {
        // quality-bars.md R5: a snapshot with a correct checksum but an
        // impossible state (e.g. written by a buggy build) is refused.
        let bad = |entries: BTreeMap<Key, Entry>| {
            let image = Image {
                entries: &entries,
                sessions: &BTreeMap::new(),
            };
            StateMachine::restore(&write_snapshot(&image))
        };
        let one = |key: &str, version, value| {
            BTreeMap::from([(Key::from(key), Entry { version, value })])
        };
        assert!(matches!(
            bad(one("k", 0, None)),
            Err(SnapshotError::Invalid(_))
        ));
        assert!(matches!(
            bad(one("\0session/1", 1, None)),
            Err(SnapshotError::Invalid(_))
        ));
        let claim = |holder: &str, claimed_at_ms, expires_at_ms| {
            Some(Value::Claim(ClaimState {
                holder: holder.into(),
                claimed_at_ms,
                expires_at_ms,
            }))
        };
        assert!(matches!(
            bad(one("t", 1, claim("", 1, 2))),
            Err(SnapshotError::Invalid(_))
        ));
        assert!(matches!(
            bad(one("t", 1, claim("a", 5, 5))),
            Err(SnapshotError::Invalid(_))
        ));
        assert!(bad(one("t", 1, claim("a", 5, 6))).is_ok());
        assert!(bad(one("t", 7, None)).is_ok(), "tombstones are valid");
    }

    #[test]
    fn version_exhaustion_is_a_typed_failure() {
        let mut sm = StateMachine::new();
        sm.entries.insert(
            Key::from("k"),
            Entry {
                version: u64::MAX,
                value: Some(Value::Stock(1)),
            },
        );
        let before = sm.clone();
        let outcome = sm.apply_decision(&Decision::new(vec![Op::reserve("k", 1)], 0));
        assert_eq!(
            outcome.reason(),
            Some(&Reason::OpFailed {
                op: 0,
                key: Key::from("k"),
                failure: Failure::VersionExhausted
            })
        );
        assert_eq!(sm, before);
    }
}
