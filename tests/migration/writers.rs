//! Concurrent writers that keep a model of everything they wrote and had acknowledged, so a test
//! can check the target key by key, and check every reply as it comes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrite_client::{Client, ConnectOptions, value};
use rand::{Rng, SeedableRng};

use crate::util::*;

/// What one writer knows it wrote (and was acknowledged).
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    Str(String, Option<u64>),
    List(Vec<String>),
    Hash(BTreeMap<String, String>),
    Counter(i64),
}

/// Writes mixed commands to its own keys (`w<n>:*`) until `stop`, checking every reply against
/// its model of what it wrote. With `tolerate_refusals`, a TRYAGAIN that outlasts the client's
/// redirect timeout is counted (the server refused, so the model is unchanged) instead of
/// failing the test; any other error fails it. Returns the model, the number of acknowledged
/// operations, redirects followed, and refusals.
pub async fn writer(
    n: usize,
    addr: String,
    tenant: &'static str,
    stop: Arc<AtomicBool>,
    far: u64,
    tolerate_refusals: bool,
) -> (HashMap<String, Model>, usize, u64, usize) {
    let opts = ConnectOptions::new(addr).tenant(tenant, "pw");
    let mut c = Client::connect(opts).await.expect("writer connects");
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    let mut model: HashMap<String, Model> = HashMap::new();
    let mut ops = 0usize;
    let mut tmp = 0usize;
    let mut refused = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let j = rng.random_range(0..300);
        let roll = rng.random_range(0..100);
        let (key, args): (String, Vec<String>) = match roll {
            0..30 => {
                let k = format!("w{n}:s{j}");
                let v = format!("{n}-{ops}");
                (k.clone(), s(&["SET", &k, &v]))
            }
            30..40 => {
                let k = format!("w{n}:s{j}");
                (k.clone(), s(&["DEL", &k]))
            }
            40..55 => {
                let k = format!("w{n}:l{j}");
                (k.clone(), s(&["RPUSH", &k, &ops.to_string()]))
            }
            55..70 => {
                let k = format!("w{n}:h{j}");
                let f = format!("f{}", rng.random_range(0..20));
                (k.clone(), s(&["HSET", &k, &f, &ops.to_string()]))
            }
            70..80 => {
                let k = format!("w{n}:c{j}");
                (k.clone(), s(&["INCR", &k]))
            }
            80..90 => {
                let k = format!("w{n}:s{j}");
                let at = (far + j as u64).to_string();
                (k.clone(), s(&["PEXPIREAT", &k, &at]))
            }
            _ => {
                tmp += 1;
                let k = format!("w{n}:tmp{tmp}");
                (k.clone(), s(&["SET", &k, "ephemeral", "PX", "100"]))
            }
        };
        let reply = match c.cmd(&args).await {
            Ok(r) => r,
            Err(e) if tolerate_refusals && e.to_string().contains("TRYAGAIN") => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => panic!("writer {n}: {args:?} failed: {e}"),
        };
        // Check every reply against the model: clients must never see a wrong value.
        match args[0].as_str() {
            "SET" if args.len() == 3 => {
                model.insert(key, Model::Str(args[2].clone(), None));
            }
            "SET" => {}
            "DEL" => {
                let had = model.remove(&key).is_some();
                assert_eq!(
                    value::as_int(&reply).unwrap(),
                    i64::from(had),
                    "writer {n} DEL {key}"
                );
            }
            "RPUSH" => {
                let e = model.entry(key.clone()).or_insert(Model::List(Vec::new()));
                let Model::List(l) = e else { unreachable!() };
                l.push(args[2].clone());
                assert_eq!(
                    value::as_int(&reply).unwrap(),
                    l.len() as i64,
                    "writer {n} RPUSH {key}"
                );
            }
            "HSET" => {
                let e = model
                    .entry(key.clone())
                    .or_insert(Model::Hash(BTreeMap::new()));
                let Model::Hash(h) = e else { unreachable!() };
                let new = h.insert(args[2].clone(), args[3].clone()).is_none();
                assert_eq!(
                    value::as_int(&reply).unwrap(),
                    i64::from(new),
                    "writer {n} HSET {key}"
                );
            }
            "INCR" => {
                let e = model.entry(key.clone()).or_insert(Model::Counter(0));
                let Model::Counter(v) = e else { unreachable!() };
                *v += 1;
                assert_eq!(value::as_int(&reply).unwrap(), *v, "writer {n} INCR {key}");
            }
            "PEXPIREAT" => {
                let at: u64 = args[2].parse().unwrap();
                let set = match model.get_mut(&key) {
                    Some(Model::Str(_, exp)) => {
                        *exp = Some(at);
                        1
                    }
                    _ => 0,
                };
                assert_eq!(
                    value::as_int(&reply).unwrap(),
                    set,
                    "writer {n} PEXPIREAT {key}"
                );
            }
            _ => unreachable!(),
        }
        ops += 1;
    }
    (model, ops, c.redirects(), refused)
}

pub async fn check_model(
    t: &mut ferrite_client::Connection,
    n: usize,
    model: &HashMap<String, Model>,
) {
    for (k, m) in model {
        match m {
            Model::Str(v, exp) => {
                let got = ok(t, &["GET", k]).await;
                assert_eq!(
                    value::as_opt_string(&got).unwrap().as_deref(),
                    Some(v.as_str()),
                    "writer {n} key {k}"
                );
                let pe = value::as_int(&ok(t, &["PEXPIRETIME", k]).await).unwrap();
                assert_eq!(pe, exp.map_or(-1, |e| e as i64), "writer {n} expiry of {k}");
            }
            Model::List(l) => {
                let got = value::as_array(&ok(t, &["LRANGE", k, "0", "-1"]).await).unwrap();
                let got: Vec<String> = got.iter().map(|f| value::as_string(f).unwrap()).collect();
                assert_eq!(&got, l, "writer {n} key {k}");
            }
            Model::Hash(h) => {
                let got = value::as_pairs(&ok(t, &["HGETALL", k]).await).unwrap();
                let got: BTreeMap<String, String> = got
                    .into_iter()
                    .map(|(f, v)| (f, value::as_string(&v).unwrap()))
                    .collect();
                assert_eq!(&got, h, "writer {n} key {k}");
            }
            Model::Counter(c) => {
                let got = ok(t, &["GET", k]).await;
                assert_eq!(
                    value::as_string(&got).unwrap(),
                    c.to_string(),
                    "writer {n} key {k}"
                );
            }
        }
    }
}
