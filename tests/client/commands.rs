//! The typed helpers against a real server, over RESP3 and RESP2 (whose replies differ in shape:
//! maps, sets, doubles, nested pairs, nulls).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ferrite_client::{Client, ConnectOptions, Expiry, Pipeline, SetOptions, Ttl, value};

use crate::common::Server;

async fn exercise(c: &mut Client) {
    c.ping().await.unwrap();
    assert_eq!(c.get("missing").await.unwrap(), None);
    c.set("s", "v1").await.unwrap();
    assert_eq!(c.get("s").await.unwrap().as_deref(), Some("v1"));
    assert_eq!(c.get_bytes("s").await.unwrap(), Some(b"v1".to_vec()));
    assert!(
        !c.set_with("s", "v2", SetOptions::new().only_if_missing())
            .await
            .unwrap()
    );
    assert!(
        c.set_with("s", "v2", SetOptions::new().only_if_exists())
            .await
            .unwrap()
    );
    assert!(
        !c.set_with("nx", "1", SetOptions::new().only_if_exists())
            .await
            .unwrap()
    );
    assert!(
        c.set_with(
            "ttl",
            "x",
            SetOptions::new().expire_in(Duration::from_secs(100))
        )
        .await
        .unwrap()
    );
    match c.ttl("ttl").await.unwrap() {
        Ttl::ExpiresIn(d) => assert!(d > Duration::from_secs(90) && d <= Duration::from_secs(100)),
        other => panic!("{other:?}"),
    }
    c.set_with("ttl", "y", SetOptions::new().expiry(Expiry::KeepTtl))
        .await
        .unwrap();
    assert!(matches!(c.ttl("ttl").await.unwrap(), Ttl::ExpiresIn(_)));
    assert!(c.persist("ttl").await.unwrap());
    assert_eq!(c.ttl("ttl").await.unwrap(), Ttl::Persistent);
    assert_eq!(c.ttl("missing").await.unwrap(), Ttl::Missing);
    assert!(c.expire("ttl", Duration::from_secs(500)).await.unwrap());
    assert!(!c.expire("missing", Duration::from_secs(1)).await.unwrap());
    assert_eq!(c.exists(&["s", "ttl", "missing", "s"]).await.unwrap(), 3);

    assert_eq!(c.incr("n").await.unwrap(), 1);
    assert_eq!(c.incrby("n", -11).await.unwrap(), -10);
    c.mset(&[("m1", "a"), ("m2", "b")]).await.unwrap();
    assert_eq!(
        c.mget(&["m1", "nope", "m2"]).await.unwrap(),
        [Some("a".to_string()), None, Some("b".to_string())]
    );
    assert_eq!(c.del(&["m1", "m2", "nope"]).await.unwrap(), 2);

    assert_eq!(c.hset("h", &[("f1", "1"), ("f2", "2")]).await.unwrap(), 2);
    assert_eq!(c.hset("h", &[("f1", "one")]).await.unwrap(), 0);
    assert_eq!(c.hget("h", "f1").await.unwrap().as_deref(), Some("one"));
    assert_eq!(c.hget("h", "zz").await.unwrap(), None);
    let all: HashMap<String, String> = c.hgetall("h").await.unwrap();
    assert_eq!(
        all,
        HashMap::from([("f1".into(), "one".into()), ("f2".into(), "2".into())])
    );
    assert!(c.hgetall("missing").await.unwrap().is_empty());

    assert_eq!(c.rpush("l", &["b", "c"]).await.unwrap(), 2);
    assert_eq!(c.lpush("l", &["a"]).await.unwrap(), 3);
    assert_eq!(c.lrange("l", 0, -1).await.unwrap(), ["a", "b", "c"]);
    assert_eq!(c.lrange("l", -2, -1).await.unwrap(), ["b", "c"]);

    assert_eq!(c.sadd("set", &["x", "y", "x"]).await.unwrap(), 2);
    assert_eq!(
        c.smembers("set").await.unwrap(),
        HashSet::from(["x".to_string(), "y".to_string()])
    );

    assert_eq!(
        c.zadd("z", &[(2.5, "b"), (1.0, "a"), (f64::INFINITY, "top")])
            .await
            .unwrap(),
        3
    );
    assert_eq!(c.zrange("z", 0, -1).await.unwrap(), ["a", "b", "top"]);
    assert_eq!(
        c.zrange_withscores("z", 0, 1).await.unwrap(),
        [("a".to_string(), 1.0), ("b".to_string(), 2.5)]
    );
    assert_eq!(c.zscore("z", "top").await.unwrap(), Some(f64::INFINITY));
    assert_eq!(c.zscore("z", "nope").await.unwrap(), None);

    // Raw commands for everything else.
    let f = c.cmd(&["STRLEN", "s"]).await.unwrap();
    assert_eq!(value::as_int(&f).unwrap(), 2);

    // A pipeline: replies in order, errors in their slots.
    let mut p = Pipeline::new();
    p.cmd(["SET", "p", "1"])
        .cmd(["INCR", "l"])
        .cmd(["INCR", "p"])
        .cmd(["GET", "p"]);
    let r = c.run(&p).await.unwrap();
    assert_eq!(value::display(r[0].as_ref().unwrap()), "OK");
    assert_eq!(r[1].as_ref().unwrap_err().code(), Some("WRONGTYPE"));
    assert_eq!(value::as_int(r[2].as_ref().unwrap()).unwrap(), 2);
    assert_eq!(value::as_string(r[3].as_ref().unwrap()).unwrap(), "2");

    // Binary values round-trip; text helpers refuse invalid UTF-8 instead of mangling it.
    c.set("bin", [0xffu8, 0x00, 0xfe]).await.unwrap();
    assert_eq!(c.get_bytes("bin").await.unwrap(), Some(vec![0xff, 0, 0xfe]));
    let e = c.get("bin").await.unwrap_err();
    assert!(e.to_string().contains("not valid UTF-8"), "{e}");
    assert_eq!(c.dbsize().await.unwrap(), 9);
}

#[tokio::test]
async fn typed_helpers_over_resp3_and_resp2() {
    let s = Server::start();
    let mut c3 = Client::connect(ConnectOptions::new(s.addr()))
        .await
        .unwrap();
    exercise(&mut c3).await;
    c3.cmd(&["FLUSHALL"]).await.unwrap();
    let mut c2 = Client::connect(ConnectOptions::new(s.addr()).resp2())
        .await
        .unwrap();
    exercise(&mut c2).await;
}
