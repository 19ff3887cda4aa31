//! A tiny scripted RESP server for unit tests: every request is logged and answered by a
//! closure, so a test can play a server that lacks HELLO, refuses with TRYAGAIN, moves a tenant
//! mid-pipeline or drops connections.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ferrite_protocol::request::{Next, RequestDecoder};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How the fake server answers one request.
pub enum Response {
    /// Raw RESP bytes, e.g. `"+OK\r\n"`.
    Reply(String),
    /// The same, after a pause.
    Delayed(Duration, String),
    /// Close the connection without answering.
    Close,
}

pub fn reply(s: impl Into<String>) -> Response {
    Response::Reply(s.into())
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Req {
    /// Which accepted connection it came on (0, 1, ...).
    pub conn: usize,
    pub args: Vec<String>,
}

impl Req {
    pub fn name(&self) -> String {
        self.args
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default()
    }

    pub fn line(&self) -> String {
        self.args.join(" ")
    }
}

type Handler = Arc<dyn Fn(&Req) -> Response + Send + Sync>;

pub struct FakeServer {
    pub addr: String,
    log: Arc<Mutex<Vec<Req>>>,
    /// Bumped to make every open connection close (a "restart" that keeps the listener).
    close: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    pub async fn start(handler: impl Fn(&Req) -> Response + Send + Sync + 'static) -> FakeServer {
        Self::start_at("127.0.0.1:0", handler).await
    }

    /// Like [`FakeServer::start`], listening on `addr` (e.g. a port a client was sent to before
    /// anything listened there).
    pub async fn start_at(
        addr: &str,
        handler: impl Fn(&Req) -> Response + Send + Sync + 'static,
    ) -> FakeServer {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (close, _) = watch::channel(0u64);
        let handler: Handler = Arc::new(handler);
        let (log2, close2) = (log.clone(), close.clone());
        let accept = tokio::spawn(async move {
            let mut n = 0;
            while let Ok((sock, _)) = listener.accept().await {
                let conn = n;
                n += 1;
                let (h, log, rx) = (handler.clone(), log2.clone(), close2.subscribe());
                tokio::spawn(serve(sock, conn, h, log, rx));
            }
        });
        FakeServer {
            addr,
            log,
            close,
            accept,
        }
    }

    /// Every request so far, as `"ARG ARG ..."` lines.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().iter().map(Req::line).collect()
    }

    /// Requests so far, except the connection handshake (HELLO, AUTH, CLIENT).
    pub fn commands(&self) -> Vec<String> {
        self.log
            .lock()
            .iter()
            .filter(|r| !matches!(r.name().as_str(), "HELLO" | "AUTH" | "CLIENT"))
            .map(Req::line)
            .collect()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.log
            .lock()
            .iter()
            .map(|r| r.conn + 1)
            .max()
            .unwrap_or(0)
    }

    /// Closes every open connection (the listener stays).
    pub fn close_all(&self) {
        self.close.send_modify(|n| *n += 1);
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.close_all();
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    conn: usize,
    handler: Handler,
    log: Arc<Mutex<Vec<Req>>>,
    mut close: watch::Receiver<u64>,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut decoder = RequestDecoder::default();
    loop {
        // Answer every complete request in the buffer, in order.
        loop {
            let (req, used) = match decoder.decode(&buf) {
                Ok(Next::Request(p)) => (
                    Req {
                        conn,
                        args: p
                            .args
                            .iter()
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect(),
                    },
                    p.consumed,
                ),
                Ok(Next::Skip(n)) => {
                    buf.advance(n);
                    continue;
                }
                Ok(Next::Incomplete) => break,
                Err(_) => return,
            };
            buf.advance(used);
            log.lock().push(req.clone());
            let out = match handler(&req) {
                Response::Reply(s) => s,
                Response::Delayed(d, s) => {
                    tokio::time::sleep(d).await;
                    s
                }
                Response::Close => return,
            };
            if sock.write_all(out.as_bytes()).await.is_err() {
                return;
            }
        }
        tokio::select! {
            r = sock.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = close.changed() => return,
        }
    }
}
