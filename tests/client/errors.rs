//! Errors from a real server carry the server and the command: wrong password, unknown command,
//! wrong type, refused connect.

use ferrite_client::{Client, ClientError, ConnectOptions, Pool, PoolOptions};

use crate::common::Server;
use crate::util::*;

#[tokio::test]
async fn errors_carry_the_server_and_the_command() {
    let s = Server::start();
    let mut a = admin(&s).await;
    ok(&mut a, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]).await;

    // Wrong password: refused at connect, by the handshake.
    let e = Client::connect(ConnectOptions::new(s.addr()).tenant("acme", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGPASS"), "{e}");
    assert_eq!(e.server_addr(), Some(s.addr().as_str()));
    assert_eq!(e.command(), Some("HELLO 3 AUTH"));
    assert_eq!(
        e.to_string(),
        format!(
            "WRONGPASS invalid username-password pair or user is disabled. \
             (server {}, command HELLO 3 AUTH)",
            s.addr()
        )
    );
    assert!(
        !e.to_string().contains("wrong"),
        "no password in errors: {e}"
    );
    // The same through RESP2 (plain AUTH) and through a pool.
    let e = Client::connect(
        ConnectOptions::new(s.addr())
            .tenant("acme", "wrong")
            .resp2(),
    )
    .await
    .unwrap_err();
    assert_eq!((e.code(), e.command()), (Some("WRONGPASS"), Some("AUTH")));
    let e = Pool::connect(
        ConnectOptions::new(s.addr()).tenant("acme", "wrong"),
        PoolOptions::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some("WRONGPASS"));

    // Unknown command and wrong type: the server's text, then where.
    let mut c = Client::connect(ConnectOptions::new(s.addr()).tenant("acme", "pw"))
        .await
        .unwrap();
    let e = c.cmd(&["NOSUCHCMD", "arg"]).await.unwrap_err();
    assert!(matches!(e.root(), ClientError::Server(_)), "{e:?}");
    assert_eq!(e.code(), Some("ERR"));
    assert_eq!(e.command(), Some("NOSUCHCMD"));
    assert!(
        e.to_string().starts_with("ERR unknown command 'NOSUCHCMD'"),
        "{e}"
    );
    assert!(
        e.to_string()
            .ends_with(&format!("(server {}, command NOSUCHCMD)", s.addr())),
        "{e}"
    );
    c.rpush("list", &["a"]).await.unwrap();
    let e = c.incr("list").await.unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"), "{e}");
    assert_eq!(e.command(), Some("INCR"));
    // The connection is still good after error replies.
    c.ping().await.unwrap();

    // Refused connect: the address, the OS error, and that it was the connect.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = Client::connect(ConnectOptions::new(&closed))
        .await
        .unwrap_err();
    assert!(e.is_connection_error());
    assert!(matches!(e.root(), ClientError::Connect { .. }), "{e:?}");
    assert_eq!(e.command(), Some("connect"));
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("cannot connect to {closed}: ")) && text.contains("refused"),
        "{text}"
    );
}
