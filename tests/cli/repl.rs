//! The interactive prompt, typed into through tmux and read off the screen: prompt, replies,
//! errors that do not end the session, Tab completion, AUTH as a tenant, history, quit, and
//! reconnecting after the server restarts.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cli_bin, cli_ok, server};

/// A tmux server of our own (its own socket), killed on drop, running one ferrite-cli prompt.
struct Tmux {
    socket: String,
    /// What every prompt line starts with (`127.0.0.1:<port>`).
    prompt: String,
}

impl Tmux {
    /// Runs `command` (a ferrite-cli prompt for `port`) in a detached 200x50 session named
    /// `main`, and waits for the first prompt.
    fn start(command: &str, port: u16) -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Tmux {
            socket: format!("ferrite-cli-test-{}-{n}", std::process::id()),
            prompt: format!("127.0.0.1:{port}"),
        };
        let ok = t
            .tmux(&[
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
                "-s",
                "main",
                command,
            ])
            .status()
            .expect("tmux must be installed (scripts/test.sh installs it)")
            .success();
        assert!(ok, "tmux new-session failed");
        t.wait("the first prompt", |s| t.at_prompt(s));
        t
    }

    fn tmux(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        let st = self
            .tmux(&["send-keys", "-t", "main", "-l", text])
            .status()
            .expect("send-keys");
        assert!(st.success());
    }

    /// Presses a key (`Enter`, `Tab`...).
    fn key(&self, key: &str) {
        let st = self
            .tmux(&["send-keys", "-t", "main", key])
            .status()
            .expect("send-keys");
        assert!(st.success());
    }

    fn line(&self, text: &str) {
        self.type_text(text);
        self.key("Enter");
    }

    /// The pane with its whole scrollback.
    fn screen(&self) -> String {
        let out = self
            .tmux(&["capture-pane", "-p", "-S", "-", "-t", "main"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn alive(&self) -> bool {
        self.tmux(&["has-session", "-t", "main"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Polls the screen until `pred` holds (20 s at most: the machine may be busy).
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn prompts(&self, screen: &str) -> usize {
        screen
            .lines()
            .filter(|l| l.starts_with(&self.prompt))
            .count()
    }

    /// The cursor sits on an empty prompt (capture-pane drops its trailing blank).
    fn at_prompt(&self, screen: &str) -> bool {
        let last = last_line(screen).trim_end();
        last.starts_with(&self.prompt) && last.ends_with('>')
    }

    /// Types `line`, waits until its output is complete and a new prompt is waiting (so the
    /// next keys go to a fresh line editor), and returns the output lines.
    fn run(&self, line: &str) -> String {
        let before = self.prompts(&self.screen());
        self.line(line);
        let screen = self.wait(line, |s| self.prompts(s) > before && self.at_prompt(s));
        let lines: Vec<&str> = screen.lines().collect();
        let end = lines
            .iter()
            .rposition(|l| l.starts_with(&self.prompt))
            .unwrap_or(0);
        let start = lines[..end]
            .iter()
            .rposition(|l| l.starts_with(&self.prompt) && l.trim_end().ends_with(line))
            .map_or(0, |i| i + 1);
        lines[start..end].join("\n")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]).status();
    }
}

/// The last non-empty line on the screen (where the cursor is).
fn last_line(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

#[test]
fn prompt_replies_completion_auth_history_quit() {
    let s = server(&[]);
    cli_ok(&s, &["TENANT.CREATE", "acme", "PASSWORD", "pw"]);
    let home = tempfile::tempdir().expect("temp dir");
    let history = home.path().join(".ferrite_cli_history");
    let t = Tmux::start(
        &format!(
            "env -u FERRITE_CLI_HISTFILE FERRITE_CLI_AUTH={} HOME={} {} -p {}",
            s.admin_secret(),
            home.path().display(),
            cli_bin(),
            s.port
        ),
        s.port,
    );

    assert_eq!(t.run("SET greeting \"hello world\""), "OK");
    assert_eq!(t.run("GET greeting"), "\"hello world\"");
    // An error is shown and the prompt goes on.
    assert_eq!(
        t.run("GET"),
        "(error) ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(t.run("INCR counter"), "(integer) 1");
    // A secret joined to its option with `=` stays out of the history too.
    assert_eq!(
        t.run("ECHO --target-password=hunter2"),
        "\"--target-password=hunter2\""
    );
    assert_eq!(t.run("HSET h field value"), "(integer) 1");

    // Tab completes command names, in the case they are typed in.
    t.type_text("hgeta");
    t.key("Tab");
    t.wait("completion of hgeta", |s| {
        last_line(s).trim_end().ends_with("> hgetall")
    });
    assert_eq!(t.run("h"), "field: \"value\"");
    t.type_text("TENANT.MIGRATE.STA");
    t.key("Tab");
    t.wait("completion of TENANT.MIGRATE.STA", |s| {
        last_line(s).trim_end().ends_with("> TENANT.MIGRATE.STATUS")
    });
    // STATUS ALL: the totals first, then the (empty) list of migrations.
    let all = t.run("ALL");
    assert!(
        all.starts_with("migrations_total: (integer) 0")
            && all.ends_with("migrations: (empty array)"),
        "{all}"
    );

    // AUTH as a tenant: the prompt names it and the tenant's keyspace is used.
    assert_eq!(t.run("AUTH acme pw"), "OK");
    assert!(
        last_line(&t.screen()).starts_with(&format!("127.0.0.1:{}[acme]>", s.port)),
        "{}",
        t.screen()
    );
    assert_eq!(t.run("GET greeting"), "(nil)");

    t.line("quit");
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.alive() {
        assert!(Instant::now() < deadline, "quit did not end the session");
        std::thread::sleep(Duration::from_millis(50));
    }
    let saved = std::fs::read_to_string(&history).expect("history file written");
    assert!(saved.contains("SET greeting \"hello world\""), "{saved}");
    assert!(saved.contains("hgetall h"), "{saved}");
    assert!(
        !saved.contains("pw") && !saved.contains("hunter2"),
        "passwords stay out of the history: {saved}"
    );
}

#[test]
fn the_prompt_opens_on_a_server_that_wants_a_password_first() {
    let s = server(&["--requirepass", "secret"]);
    let t = Tmux::start(
        &format!(
            "env FERRITE_CLI_HISTFILE=/dev/null {} -p {}",
            cli_bin(),
            s.port
        ),
        s.port,
    );
    let screen = t.screen();
    assert_eq!(
        screen
            .matches("(error) NOAUTH Authentication required by")
            .count(),
        1,
        "{screen}"
    );
    assert!(screen.contains("type AUTH <password>"), "{screen}");
    assert_eq!(t.run("PING"), "(error) NOAUTH Authentication required.");
    assert_eq!(t.run("AUTH secret"), "OK");
    assert_eq!(t.run("PING"), "PONG");
    assert!(t.alive());
}

#[test]
fn reconnects_after_the_server_restarts() {
    let port = crate::free_port().to_string();
    let mut s = server(&["--port", &port]);
    let t = Tmux::start(
        &format!("env FERRITE_CLI_HISTFILE=/dev/null {} -p {port}", cli_bin()),
        s.port,
    );
    assert_eq!(t.run("SET before restart"), "OK");

    s.kill();
    let out = t.run("PING");
    assert!(
        out.contains(&format!("127.0.0.1:{port}"))
            && out.contains("reconnecting on the next command"),
        "{out}"
    );
    // While the server is down, commands fail with a clear message and the prompt stays; at
    // once, not after retrying the refused connect (that is only for following a redirect).
    let started = Instant::now();
    let out = t.run("PING");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.starts_with(&format!("Could not connect to Ferrite at 127.0.0.1:{port}")),
        "{out}"
    );

    let s2 = server(&["--port", &port]);
    assert_eq!(s2.port.to_string(), port);
    assert_eq!(t.run("PING"), "PONG");
    assert_eq!(t.run("GET before"), "(nil)", "a new, empty server");
    assert!(t.alive(), "the session survived the restart");
}
