//! One connection to a server: handshake (HELLO 3 with AUTH, falling back to RESP2), commands,
//! and explicit send/receive for pipelining.
//!
//! Replies are decoded in the protocol the connection speaks at that moment: RESP2 until a
//! `HELLO 3` succeeds, RESP3 after it, and again RESP2 after a `HELLO 2` (the two decoders differ
//! on nulls). A `HELLO <version>` is noticed when it is sent, so its own reply is decoded in the
//! protocol it asked for, also in the middle of a pipeline.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use ferrite_protocol::frame::{Frame, decode_reply, frame_text, reply_type_error};
use ferrite_protocol::request::{Limits, Next, RequestDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ClientError;

/// How to reach and authenticate to a server.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port`.
    pub addr: String,
    /// Tenant to bind to (`AUTH <tenant> <password>`); None = the default tenant.
    pub tenant: Option<String>,
    pub password: Option<String>,
    /// Ask for RESP3 (HELLO 3); RESP2 is used when the server does not support HELLO. When
    /// false, no HELLO is sent and the connection speaks RESP2.
    pub resp3: bool,
    /// Bound on opening a connection: the TCP connect and the handshake (HELLO, AUTH, CLIENT
    /// SETNAME) together, so that a peer that accepts but never answers fails as fast as one
    /// that does not accept.
    pub connect_timeout: Duration,
    /// Bound on each command's round trip.
    pub command_timeout: Duration,
    /// Client name set at connect time (CLIENT SETNAME).
    pub name: Option<String>,
}

impl ConnectOptions {
    pub fn new(addr: impl Into<String>) -> Self {
        ConnectOptions {
            addr: addr.into(),
            tenant: None,
            password: None,
            resp3: true,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(30),
            name: None,
        }
    }

    pub fn tenant(mut self, tenant: impl Into<String>, password: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self.password = Some(password.into());
        self
    }

    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    pub fn resp2(mut self) -> Self {
        self.resp3 = false;
        self
    }

    pub fn command_timeout(mut self, t: Duration) -> Self {
        self.command_timeout = t;
        self
    }

    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(buf: &mut BytesMut, args: &[A]) {
    buf.put_u8(b'*');
    buf.put_slice(args.len().to_string().as_bytes());
    buf.put_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        buf.put_u8(b'$');
        buf.put_slice(a.len().to_string().as_bytes());
        buf.put_slice(b"\r\n");
        buf.put_slice(a);
        buf.put_slice(b"\r\n");
    }
}

/// A connection speaking RESP2 or RESP3.
pub struct Connection {
    stream: TcpStream,
    read: BytesMut,
    write: BytesMut,
    /// The protocol replies arrive in now. It matters for decoding: the RESP3 decoder reads
    /// RESP2's null bulk (`$-1`) and null array (`*-1`) as the start of a streamed string, and
    /// the RESP2 decoder knows no maps.
    resp3: bool,
    /// One entry per request sent whose reply is not read yet, oldest first: the protocol a
    /// `HELLO <version>` asks for (its reply comes in that protocol, and so do all later ones if
    /// it succeeds), `None` for every other request.
    switches: VecDeque<Option<bool>>,
    opts: ConnectOptions,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.opts.addr)
            .field("resp3", &self.resp3)
            .finish()
    }
}

impl Connection {
    /// Connects and authenticates, all within [`ConnectOptions::connect_timeout`].
    pub async fn connect(opts: ConnectOptions) -> Result<Connection, ClientError> {
        let deadline = tokio::time::Instant::now() + opts.connect_timeout;
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(&opts.addr))
            .await
            .map_err(|_| ClientError::Timeout(format!("connecting to {}", opts.addr)))?
            .map_err(|e| ClientError::Connect {
                addr: opts.addr.clone(),
                source: e,
            })?;
        let _ = stream.set_nodelay(true);
        let addr = opts.addr.clone();
        let mut c = Connection {
            stream,
            read: BytesMut::with_capacity(16 * 1024),
            write: BytesMut::with_capacity(16 * 1024),
            // Every connection starts in RESP2; HELLO 3 switches it.
            resp3: false,
            switches: VecDeque::new(),
            opts,
        };
        // Dropping the handshake midway is fine: the half-open connection is dropped with it.
        match tokio::time::timeout_at(deadline, c.handshake()).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Timeout(format!(
                    "connecting to {addr}: no reply to the handshake"
                )));
            }
        }
        Ok(c)
    }

    async fn handshake(&mut self) -> Result<(), ClientError> {
        let user = self
            .opts
            .tenant
            .clone()
            .unwrap_or_else(|| "default".to_string());
        if self.opts.resp3 {
            let mut args: Vec<Vec<u8>> = vec![b"HELLO".to_vec(), b"3".to_vec()];
            if let Some(pw) = &self.opts.password {
                args.extend([
                    b"AUTH".to_vec(),
                    user.clone().into_bytes(),
                    pw.clone().into_bytes(),
                ]);
            }
            match self.cmd(&args).await {
                Ok(_) => return self.set_name().await,
                // Servers without HELLO (or RESP3): fall back to RESP2 below.
                Err(ClientError::Server(msg))
                    if msg.starts_with("ERR unknown command") || msg.starts_with("NOPROTO") => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(pw) = self.opts.password.clone() {
            let r = match self.opts.tenant.clone() {
                Some(t) => {
                    self.cmd(&[b"AUTH".as_slice(), t.as_bytes(), pw.as_bytes()])
                        .await
                }
                None => self.cmd(&[b"AUTH".as_slice(), pw.as_bytes()]).await,
            };
            r?;
        }
        self.set_name().await
    }

    async fn set_name(&mut self) -> Result<(), ClientError> {
        if let Some(n) = self.opts.name.clone() {
            self.cmd(&[b"CLIENT".as_slice(), b"SETNAME", n.as_bytes()])
                .await?;
        }
        Ok(())
    }

    /// True unless the peer closed the connection (or it failed) while it sat idle; checked
    /// without blocking. A pool calls this before handing out an idle connection, so that
    /// connections to a server that was restarted are replaced instead of failing a command.
    /// Unsolicited bytes on an idle connection also count as unusable: the next reply would be
    /// read out of step.
    pub fn is_open(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        // A real peek on the (non-blocking) socket rather than tokio's try_read, which answers
        // from readiness the runtime may not have polled yet right after the peer closed.
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(&self.stream).peek(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Ok(_) | Err(_) => false,
        }
    }

    /// Whether replies come in RESP3 now (after a successful `HELLO 3`).
    pub fn is_resp3(&self) -> bool {
        self.resp3
    }

    pub fn addr(&self) -> &str {
        &self.opts.addr
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    /// Queues a command for sending (call [`Connection::flush`] or use [`Connection::send`]).
    pub fn queue<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        encode_command(&mut self.write, args);
        self.switches.push_back(hello_version(args));
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if self.write.is_empty() {
            return Ok(());
        }
        let t = self.opts.command_timeout;
        let r = tokio::time::timeout(t, self.stream.write_all(&self.write)).await;
        self.write.clear();
        match r {
            Err(_) => Err(ClientError::Timeout(format!(
                "writing to {}",
                self.opts.addr
            ))),
            Ok(Err(e)) => Err(ClientError::Io(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sends one command without waiting for its reply (pipelining).
    pub async fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(), ClientError> {
        self.queue(args);
        self.flush().await
    }

    /// Sends pre-encoded requests (RESP multibulk or inline; a `HELLO <version>` among them is
    /// noticed as with [`Connection::queue`]).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut decoder = RequestDecoder::new(Limits {
            max_bulk_len: usize::MAX,
            max_args: usize::MAX,
        });
        let mut pos = 0;
        // A malformed tail is left to the server, which answers it with an error and closes.
        while let Ok(next) = decoder.decode(&bytes[pos..]) {
            match next {
                Next::Request(p) => {
                    let args: Vec<&[u8]> = p.args.iter().collect();
                    self.switches.push_back(hello_version(&args));
                    pos += p.consumed;
                }
                Next::Skip(n) => pos += n,
                Next::Incomplete => break,
            }
        }
        let t = self.opts.command_timeout;
        match tokio::time::timeout(t, self.stream.write_all(bytes)).await {
            Err(_) => Err(ClientError::Timeout(format!(
                "writing to {}",
                self.opts.addr
            ))),
            Ok(Err(e)) => Err(ClientError::Io(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Receives the next reply; error replies are returned as `Ok(Frame::SimpleError/BlobError)`.
    pub async fn recv_frame(&mut self) -> Result<Frame, ClientError> {
        let t = self.opts.command_timeout;
        let deadline = tokio::time::Instant::now() + t;
        loop {
            let switch = self.switches.front().copied().flatten();
            let resp3 = switch.unwrap_or(self.resp3);
            let decoded = if resp3 {
                decode_reply(&mut self.read).map_err(|e| e.0)
            } else {
                decode_resp2(&mut self.read)
            };
            match decoded {
                Ok(Some(Frame::Push { .. })) => continue,
                Ok(Some(f)) => {
                    self.switches.pop_front();
                    if switch.is_some() && !is_error(&f) {
                        self.resp3 = resp3;
                    }
                    return Ok(f);
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e)),
            }
            if self.read.capacity() - self.read.len() < 8192 {
                self.read.reserve(64 * 1024);
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read))
                .await
                .map_err(|_| {
                    ClientError::Timeout(format!("waiting for a reply from {}", self.opts.addr))
                })?
                .map_err(ClientError::Io)?;
            if n == 0 {
                return Err(ClientError::Closed(self.opts.addr.clone()));
            }
        }
    }

    /// Receives the next reply, turning error replies into [`ClientError`]s.
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        let f = self.recv_frame().await?;
        check(f)
    }

    /// Sends one command and waits for its reply.
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ClientError> {
        self.send(args).await?;
        self.recv().await
    }

    /// Sends several commands at once and returns every reply in order (errors included as
    /// `Err` entries).
    pub async fn pipeline<A: AsRef<[u8]>>(
        &mut self,
        cmds: &[Vec<A>],
    ) -> Result<Vec<Result<Frame, ClientError>>, ClientError> {
        for c in cmds {
            self.queue(c);
        }
        self.flush().await?;
        let mut out = Vec::with_capacity(cmds.len());
        for _ in cmds {
            out.push(check(self.recv_frame().await?));
        }
        Ok(out)
    }
}

/// The protocol a `HELLO <version>` request asks for (true for RESP3), if it is one.
fn hello_version<A: AsRef<[u8]>>(args: &[A]) -> Option<bool> {
    if !args.first()?.as_ref().eq_ignore_ascii_case(b"HELLO") {
        return None;
    }
    match args.get(1)?.as_ref() {
        b"2" => Some(false),
        b"3" => Some(true),
        _ => None,
    }
}

fn is_error(f: &Frame) -> bool {
    matches!(f, Frame::SimpleError { .. } | Frame::BlobError { .. })
}

/// Deepest nesting accepted in a RESP2 reply (the decoder recurses per level).
const MAX_DEPTH: usize = 64;

/// Decodes one RESP2 reply from the front of `buf` into the RESP3 frame type used everywhere
/// else (null bulk and null array become `Null`).
fn decode_resp2(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    use redis_protocol::resp2::types::BytesFrame as F2;
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if !matches!(first, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(reply_type_error(first));
    }
    // Refuse pathological nesting at the head of the buffer before the recursive decoder.
    let mut depth = 0;
    let mut pos = 0;
    while buf.get(pos) == Some(&b'*') {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err("reply nests too deeply".into());
        }
        match buf[pos..].iter().position(|&c| c == b'\n') {
            Some(nl) => pos += nl + 1,
            None => break,
        }
    }
    fn convert(f: F2) -> Frame {
        match f {
            F2::SimpleString(data) => Frame::SimpleString {
                data,
                attributes: None,
            },
            F2::Error(data) => Frame::SimpleError {
                data,
                attributes: None,
            },
            F2::Integer(data) => Frame::Number {
                data,
                attributes: None,
            },
            F2::BulkString(data) => Frame::BlobString {
                data,
                attributes: None,
            },
            F2::Array(items) => Frame::Array {
                data: items.into_iter().map(convert).collect(),
                attributes: None,
            },
            F2::Null => Frame::Null,
        }
    }
    match redis_protocol::resp2::decode::decode_bytes_mut(buf) {
        Ok(Some((f, _, _))) => Ok(Some(convert(f))),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("invalid reply: {}", e.details())),
    }
}

/// Turns an error frame into a [`ClientError`], classifying redirects and retries.
pub fn check(f: Frame) -> Result<Frame, ClientError> {
    match &f {
        Frame::SimpleError { .. } | Frame::BlobError { .. } => {
            let text = frame_text(&f).unwrap_or_default();
            Err(ClientError::from_server_text(text))
        }
        _ => Ok(f),
    }
}
