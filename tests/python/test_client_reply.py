"""CLIENT REPLY ON|OFF|SKIP, per connection, as in Redis: OFF drops every command reply until ON,
SKIP drops the next command's; pub/sub confirmations and messages are pushes and always arrive."""

from __future__ import annotations

from helpers import Conn, wait_until


def test_off_drops_replies_until_on(server):
    c = Conn(server.client())
    c.send("CLIENT", "REPLY", "OFF")
    c.send("SET", "a", "1")
    c.send("GET", "nosuchcommand-x")
    c.send("NOSUCHCOMMAND")
    # The first reply is ON's own OK.
    assert c("CLIENT", "REPLY", "ON") == "OK"
    assert c("GET", "a") == "1"


def test_skip_drops_the_next_reply_only(server):
    c = Conn(server.client())
    c.send("CLIENT", "REPLY", "SKIP")
    c.send("SET", "a", "2")
    assert c("GET", "a") == "2"
    assert c("PING") == "PONG"
    # SKIP while OFF changes nothing; ON answers.
    c.send("CLIENT", "REPLY", "OFF")
    c.send("CLIENT", "REPLY", "SKIP")
    c.send("PING")
    assert c("CLIENT", "REPLY", "ON") == "OK"
    assert c.error("CLIENT", "REPLY", "MAYBE") == "ERR syntax error"


def test_pubsub_messages_with_reply_off(server, admin):
    c = Conn(server.client())
    c.send("CLIENT", "REPLY", "OFF")
    assert c("SUBSCRIBE", "channel") == ["subscribe", "channel", 1]
    c.send("CLIENT", "REPLY", "OFF")
    assert admin.publish("channel", "hello") == 1
    assert c.read() == ["message", "channel", "hello"]
    assert c("UNSUBSCRIBE", "channel") == ["unsubscribe", "channel", 0]


def test_reset_turns_replies_back_on(server):
    c = Conn(server.client())
    c.send("CLIENT", "REPLY", "OFF")
    c.send("SET", "a", "1")
    assert c("RESET") == "RESET"


def test_off_drops_the_late_reply_of_a_blocked_command(server, admin):
    c = Conn(server.client())
    c.send("CLIENT", "REPLY", "OFF")
    c.send("BLPOP", "reply-off-list", 0)

    def blocked():
        return any(cl.get("cmd") == "blpop" and "b" in cl.get("flags", "")
                   for cl in admin.client_list())

    wait_until(blocked, what="BLPOP to block")
    assert admin.lpush("reply-off-list", "x") == 1
    wait_until(lambda: not blocked(), what="BLPOP to be served")
    # The first reply is ON's own OK, not BLPOP's.
    assert c("CLIENT", "REPLY", "ON") == "OK"
    assert admin.exists("reply-off-list") == 0
