//! The storage and commands, compared with a deliberately simple model under random command
//! sequences: every reply and the final content must agree, and the incrementally maintained
//! digest must equal a recomputation from scratch.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use proptest::prelude::*;

use crate::testing::TestDb;

#[derive(Debug, Clone, PartialEq)]
enum M {
    Str(String),
    List(VecDeque<String>),
    Hash(BTreeMap<String, String>),
    Set(BTreeSet<String>),
    ZSet(BTreeMap<String, i64>),
}

impl M {
    fn type_name(&self) -> &'static str {
        match self {
            M::Str(_) => "string",
            M::List(_) => "list",
            M::Hash(_) => "hash",
            M::Set(_) => "set",
            M::ZSet(_) => "zset",
        }
    }
}

#[derive(Default)]
struct Model {
    keys: HashMap<String, (M, Option<u64>)>,
    now: u64,
}

const WRONGTYPE: &str = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

fn int(n: i64) -> String {
    format!(":{n}\r\n")
}

impl Model {
    /// The live value of a key (expired keys are gone).
    fn live(&mut self, k: &str) -> Option<&mut (M, Option<u64>)> {
        if self
            .keys
            .get(k)
            .is_some_and(|(_, e)| e.is_some_and(|t| t <= self.now))
        {
            self.keys.remove(k);
        }
        self.keys.get_mut(k)
    }

    fn remove_if_empty(&mut self, k: &str) {
        let empty = match self.keys.get(k) {
            Some((M::List(l), _)) => l.is_empty(),
            Some((M::Hash(h), _)) => h.is_empty(),
            Some((M::Set(s), _)) => s.is_empty(),
            Some((M::ZSet(z), _)) => z.is_empty(),
            _ => false,
        };
        if empty {
            self.keys.remove(k);
        }
    }

    fn apply(&mut self, op: &Op) -> String {
        match op {
            Op::Set(k, v) => {
                self.keys.insert(k.clone(), (M::Str(v.clone()), None));
                "+OK\r\n".into()
            }
            Op::Get(k) => match self.live(k) {
                None => "$-1\r\n".into(),
                Some((M::Str(s), _)) => bulk(s),
                Some(_) => WRONGTYPE.into(),
            },
            Op::Del(k) => int(i64::from(
                self.live(k).is_some() && self.keys.remove(k).is_some(),
            )),
            Op::Incr(k) => match self.live(k) {
                None => {
                    self.keys.insert(k.clone(), (M::Str("1".into()), None));
                    int(1)
                }
                Some((M::Str(s), _)) => match s.parse::<i64>() {
                    Ok(n) if s == &n.to_string() => {
                        *s = (n + 1).to_string();
                        int(n + 1)
                    }
                    _ => "-ERR value is not an integer or out of range\r\n".into(),
                },
                Some(_) => WRONGTYPE.into(),
            },
            Op::Append(k, v) => match self.live(k) {
                None => {
                    self.keys.insert(k.clone(), (M::Str(v.clone()), None));
                    int(v.len() as i64)
                }
                Some((M::Str(s), _)) => {
                    s.push_str(v);
                    int(s.len() as i64)
                }
                Some(_) => WRONGTYPE.into(),
            },
            Op::LPush(k, v) => {
                let e = match self.live(k) {
                    None => {
                        self.keys
                            .insert(k.clone(), (M::List(VecDeque::new()), None));
                        self.keys.get_mut(k)
                    }
                    Some(e) => Some(e),
                };
                match e {
                    Some((M::List(l), _)) => {
                        l.push_front(v.clone());
                        int(l.len() as i64)
                    }
                    _ => WRONGTYPE.into(),
                }
            }
            Op::RPop(k) => {
                let r = match self.live(k) {
                    None => "$-1\r\n".into(),
                    Some((M::List(l), _)) => l.pop_back().map_or("$-1\r\n".into(), |v| bulk(&v)),
                    Some(_) => WRONGTYPE.into(),
                };
                self.remove_if_empty(k);
                r
            }
            Op::HSet(k, f, v) => {
                let e = match self.live(k) {
                    None => {
                        self.keys
                            .insert(k.clone(), (M::Hash(BTreeMap::new()), None));
                        self.keys.get_mut(k)
                    }
                    Some(e) => Some(e),
                };
                match e {
                    Some((M::Hash(h), _)) => {
                        int(i64::from(h.insert(f.clone(), v.clone()).is_none()))
                    }
                    _ => WRONGTYPE.into(),
                }
            }
            Op::HDel(k, f) => {
                let r = match self.live(k) {
                    None => int(0),
                    Some((M::Hash(h), _)) => int(i64::from(h.remove(f).is_some())),
                    Some(_) => WRONGTYPE.into(),
                };
                self.remove_if_empty(k);
                r
            }
            Op::SAdd(k, m) => {
                let e = match self.live(k) {
                    None => {
                        self.keys.insert(k.clone(), (M::Set(BTreeSet::new()), None));
                        self.keys.get_mut(k)
                    }
                    Some(e) => Some(e),
                };
                match e {
                    Some((M::Set(s), _)) => int(i64::from(s.insert(m.clone()))),
                    _ => WRONGTYPE.into(),
                }
            }
            Op::SRem(k, m) => {
                let r = match self.live(k) {
                    None => int(0),
                    Some((M::Set(s), _)) => int(i64::from(s.remove(m))),
                    Some(_) => WRONGTYPE.into(),
                };
                self.remove_if_empty(k);
                r
            }
            Op::ZAdd(k, score, m) => {
                let e = match self.live(k) {
                    None => {
                        self.keys
                            .insert(k.clone(), (M::ZSet(BTreeMap::new()), None));
                        self.keys.get_mut(k)
                    }
                    Some(e) => Some(e),
                };
                match e {
                    Some((M::ZSet(z), _)) => int(i64::from(z.insert(m.clone(), *score).is_none())),
                    _ => WRONGTYPE.into(),
                }
            }
            Op::ZRem(k, m) => {
                let r = match self.live(k) {
                    None => int(0),
                    Some((M::ZSet(z), _)) => int(i64::from(z.remove(m).is_some())),
                    Some(_) => WRONGTYPE.into(),
                };
                self.remove_if_empty(k);
                r
            }
            Op::PExpire(k, ms) => {
                let now = self.now;
                match self.live(k) {
                    None => int(0),
                    Some(e) => {
                        e.1 = Some(now + ms);
                        int(1)
                    }
                }
            }
            Op::Persist(k) => match self.live(k) {
                Some((_, e @ Some(_))) => {
                    *e = None;
                    int(1)
                }
                _ => int(0),
            },
            Op::Type(k) => match self.live(k) {
                None => "+none\r\n".into(),
                Some((m, _)) => format!("+{}\r\n", m.type_name()),
            },
            Op::Rename(a, b) => match self.live(a).is_some() {
                false => "-ERR no such key\r\n".into(),
                true => {
                    if a != b
                        && let Some(v) = self.keys.remove(a)
                    {
                        self.keys.insert(b.clone(), v);
                    }
                    "+OK\r\n".into()
                }
            },
            Op::Advance(ms) => {
                self.now += ms;
                String::new()
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Set(String, String),
    Get(String),
    Del(String),
    Incr(String),
    Append(String, String),
    LPush(String, String),
    RPop(String),
    HSet(String, String, String),
    HDel(String, String),
    SAdd(String, String),
    SRem(String, String),
    ZAdd(String, i64, String),
    ZRem(String, String),
    PExpire(String, u64),
    Persist(String),
    Type(String),
    Rename(String, String),
    Advance(u64),
}

impl Op {
    fn argv(&self) -> Option<Vec<String>> {
        let v = |xs: &[&str]| Some(xs.iter().map(|s| s.to_string()).collect());
        match self {
            Op::Set(k, x) => v(&["SET", k, x]),
            Op::Get(k) => v(&["GET", k]),
            Op::Del(k) => v(&["DEL", k]),
            Op::Incr(k) => v(&["INCR", k]),
            Op::Append(k, x) => v(&["APPEND", k, x]),
            Op::LPush(k, x) => v(&["LPUSH", k, x]),
            Op::RPop(k) => v(&["RPOP", k]),
            Op::HSet(k, f, x) => v(&["HSET", k, f, x]),
            Op::HDel(k, f) => v(&["HDEL", k, f]),
            Op::SAdd(k, m) => v(&["SADD", k, m]),
            Op::SRem(k, m) => v(&["SREM", k, m]),
            Op::ZAdd(k, s, m) => v(&["ZADD", k, &s.to_string(), m]),
            Op::ZRem(k, m) => v(&["ZREM", k, m]),
            Op::PExpire(k, ms) => v(&["PEXPIRE", k, &ms.to_string()]),
            Op::Persist(k) => v(&["PERSIST", k]),
            Op::Type(k) => v(&["TYPE", k]),
            Op::Rename(a, b) => v(&["RENAME", a, b]),
            Op::Advance(_) => None,
        }
    }
}

fn key() -> impl Strategy<Value = String> {
    (0..5u8).prop_map(|i| format!("k{i}"))
}

fn small() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("x".to_string()),
        "[a-c]{0,3}",
        (0..100i64).prop_map(|n| n.to_string())
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), small()).prop_map(|(k, v)| Op::Set(k, v)),
        key().prop_map(Op::Get),
        key().prop_map(Op::Del),
        key().prop_map(Op::Incr),
        (key(), small()).prop_map(|(k, v)| Op::Append(k, v)),
        (key(), small()).prop_map(|(k, v)| Op::LPush(k, v)),
        key().prop_map(Op::RPop),
        (key(), small(), small()).prop_map(|(k, f, v)| Op::HSet(k, f, v)),
        (key(), small()).prop_map(|(k, f)| Op::HDel(k, f)),
        (key(), small()).prop_map(|(k, m)| Op::SAdd(k, m)),
        (key(), small()).prop_map(|(k, m)| Op::SRem(k, m)),
        (key(), -5..5i64, small()).prop_map(|(k, s, m)| Op::ZAdd(k, s, m)),
        (key(), small()).prop_map(|(k, m)| Op::ZRem(k, m)),
        (key(), 1..50u64).prop_map(|(k, ms)| Op::PExpire(k, ms)),
        key().prop_map(Op::Persist),
        key().prop_map(Op::Type),
        (key(), key()).prop_map(|(a, b)| Op::Rename(a, b)),
        (1..40u64).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn storage_agrees_with_a_simple_model(ops in proptest::collection::vec(op(), 1..200)) {
        let mut t = TestDb::new();
        let mut m = Model { now: t.now, ..Default::default() };
        for op in &ops {
            let want = m.apply(op);
            match op.argv() {
                Some(argv) => {
                    let got = t.run(&argv);
                    prop_assert_eq!(got, want, "after {:?}", op);
                }
                None => t.now = m.now,
            }
        }
        // Final content: every live key in the model, with its type; nothing else.
        let live: Vec<String> = {
            let mut ks: Vec<String> = m.keys.keys().cloned().collect();
            ks.retain(|k| m.live(k).is_some());
            ks.sort();
            ks
        };
        let listed = t.run(&["KEYS", "*"]);
        let count = listed.lines().filter(|l| l.starts_with('k')).count();
        prop_assert_eq!(count, live.len(), "KEYS: {}", listed);
        for k in &live {
            let want = format!("+{}\r\n", m.keys[k].0.type_name());
            prop_assert_eq!(t.run(&["TYPE", k]), want);
        }
        t.assert_digest_consistent();
    }
}
