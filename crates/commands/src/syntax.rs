//! The argument syntax of every command, written once as text and parsed into the tree that
//! `COMMAND DOCS` reports under `arguments` (what `redis-cli` turns into its input hints and
//! `HELP` lines).
//!
//! # Notation
//!
//! The text reads like a Redis command reference line, with one change that makes it unambiguous:
//! a required choice is written `<A|B>` (Redis's reference writes a bare `A|B`, which cannot be
//! told apart from a choice between longer alternatives).
//!
//! - `name`: an argument (it has a lower-case letter). Its type comes from the name (`key`, names
//!   ending in `key`, `source` and `destination` are keys; `seconds`, `count`, `cursor`... are
//!   integers; `score` is a double; `unix-time-*` are Unix times; anything else is a string), or
//!   is given after a colon: `increment:double`. A colon followed by anything other than a type
//!   name is part of the name (`host:port`).
//! - `TOKEN`: a literal word (no lower-case letter). Directly before an argument or a `<...>`
//!   choice it introduces that argument (`EX seconds`, `TYPE <NORMAL|MASTER>`); otherwise it stands
//!   alone (`[GET]`).
//! - `[a b|c]`: optional; `<a|b>`: required. Inside, `|` separates alternatives, each a sequence of
//!   items; one alternative of several items is a block, several alternatives are a choice. A block
//!   that starts with a literal word carries it as its token (`[LIMIT offset count]`).
//! - `x [x ...]`: `x` may repeat; `x` may be several items (`field value [field value ...]`). With
//!   the token repeated (`GET pattern [GET pattern ...]`) each repetition needs it; written once
//!   (`ID client-id [client-id ...]`) it introduces the whole list.
//!
//! Container commands (CLIENT, COMMAND, CONFIG) have no arguments of their own: each subcommand is
//! described in [`SUBCOMMANDS`], as Redis does.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

/// `(command, syntax)` for every command of [`crate::spec::all`].
#[rustfmt::skip]
const SYNTAX: &[(&str, &str)] = &[
    // connection and server
    ("ping", "[message]"),
    ("echo", "message"),
    ("quit", ""),
    ("hello", "[protover [AUTH username password] [SETNAME clientname]]"),
    ("auth", "[username] password"),
    ("select", "index"),
    ("client", ""),
    ("reset", ""),
    ("command", ""),
    ("object", ""),
    ("config", ""),
    ("info", "[section [section ...]]"),
    ("time", ""),
    ("monitor", ""),
    ("shutdown", "[NOSAVE|SAVE] [NOW] [FORCE] [ABORT]"),
    ("save", ""),
    ("bgsave", "[SCHEDULE]"),
    ("bgrewriteaof", ""),
    ("lastsave", ""),
    ("memory", ""),
    ("move", "key db:integer"),
    ("slowlog", ""),
    ("latency", ""),
    ("acl", ""),
    ("cluster", "subcommand [arg [arg ...]]"),
    ("wait", "numreplicas timeout"),
    ("swapdb", "index1:integer index2:integer"),
    ("multi", ""),
    ("exec", ""),
    ("discard", ""),
    ("watch", "key [key ...]"),
    ("unwatch", ""),
    // tenancy
    ("tenant.create", "tenant [PASSWORD password] [MAXMEMORY bytes] [MAXKEYS count] [OPS ops-per-sec] [MAXCLIENTS count]"),
    ("tenant.delete", "tenant [FORCE]"),
    ("tenant.list", ""),
    ("tenant.info", "tenant"),
    ("tenant.use", "tenant"),
    ("tenant.current", ""),
    ("tenant.throttle", "tenant OPS ops-per-sec"),
    ("tenant.limits", "tenant [MAXMEMORY bytes] [MAXKEYS count] [OPS ops-per-sec] [MAXCLIENTS count] [PASSWORD password]"),
    ("tenant.suspend", "tenant"),
    ("tenant.resume", "tenant"),
    ("tenant.digest", "tenant [FULL]"),
    ("tenant.backup", "tenant [NAME name] [FORMAT <NATIVE|RDB>]"),
    ("tenant.backup.list", "[tenant]"),
    ("tenant.backup.info", "backup-id"),
    ("tenant.backup.delete", "backup-id"),
    ("tenant.backup.jobs", ""),
    ("tenant.restore", "tenant <BACKUP backup-id [AS new-tenant]|RDB path [DB db]> [REPLACE]"),
    // migration
    ("tenant.migrate", "tenant TARGET host:port [MODE <LIVE|FAST|CONTINUOUS|INCREMENTAL>] [CONFLICT <SOURCE_WINS|TARGET_WINS|NEWEST_WINS>] [PATTERNS pattern [pattern ...]] [PARALLEL streams] [BATCH_SIZE keys] [TIMEOUT seconds] [RATE bytes-per-sec] [AUTH password] [REDIRECT client-facing-host:port] [PRIORITY <HIGH|NORMAL|LOW>] [AFTER migration-id [migration-id ...]] [GROUP group] [APPROVAL] [RETENTION seconds]"),
    ("tenant.migrate.status", "<migration-id|ALL|GROUP group>"),
    ("tenant.migrate.pause", "<migration-id|GROUP group>"),
    ("tenant.migrate.resume", "<migration-id [AUTH password]|GROUP group>"),
    ("tenant.migrate.cancel", "<migration-id [AUTH password]|GROUP group>"),
    ("tenant.migrate.stop", "migration-id <GRACEFUL|IMMEDIATE>"),
    ("tenant.migrate.rollback", "migration-id"),
    ("tenant.migrate.finalize", "migration-id"),
    ("tenant.migrate.approve", "migration-id"),
    ("tenant.migrate.reject", "migration-id [reason]"),
    ("tenant.migrate.cutover", "<migration-id|GROUP group> [FORCE|RETRY [AUTH password] [FORCE]|SCHEDULED rfc3339-time [FORCE]|UNSCHEDULE|PATTERN pattern [FORCE]|DNS dns-name [FORCE]]"),
    ("tenant.migrate.validate", "tenant TARGET host:port [AUTH password]"),
    ("tenant.migrate.debug", "migration-id <BREAK breakpoint|CONTINUE|WAITING>"),
    ("tenant.migrate.verify", "migration-id [PATTERN pattern]"),
    ("tenant.migrate.update", "migration-id [PARALLEL streams] [BATCH_SIZE keys] [RATE bytes-per-sec] [PRIORITY <HIGH|NORMAL|LOW>] [AFTER migration-id [migration-id ...]]"),
    ("tenant.import.check", "tenant wire-version source-run-id"),
    ("tenant.import.begin", "tenant migration-id wire-version source-address source-run-id [PASSWORD password] [CREDENTIAL credential] [MAXMEMORY bytes] [MAXKEYS count] [OPS ops-per-sec] [MAXCLIENTS count] [CONFLICT policy] [BACKUP 1]"),
    ("tenant.import.batch", "import-id batch"),
    ("tenant.import.resume", "import-id"),
    ("tenant.import.prepare", "import-id"),
    ("tenant.import.activate", "import-id"),
    ("tenant.import.abort", "import-id"),
    ("tenant.import.stop", "import-id"),
    ("tenant.import.backup", "import-id <START old-source-address retention-seconds|STATUS|CUTOVER|END>"),
    ("tenant.import.status", "import-id"),
    ("tenant.import.pattern", "import-id <DIGEST|ACTIVATE|HOLD|RELEASE|ACTIVATED> index [arg [arg ...]]"),
    // The keys named here are the imported tenant's, not keys of this command's keyspace.
    ("tenant.import.fetch", "import-id key:string [key:string ...]"),
    // strings
    ("get", "key"),
    ("set", "key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]"),
    ("setnx", "key value"),
    ("setex", "key seconds value"),
    ("psetex", "key milliseconds value"),
    ("getset", "key value"),
    ("getdel", "key"),
    ("getex", "key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST]"),
    ("mget", "key [key ...]"),
    ("mset", "key value [key value ...]"),
    ("msetnx", "key value [key value ...]"),
    ("incr", "key"),
    ("decr", "key"),
    ("incrby", "key increment"),
    ("decrby", "key decrement"),
    ("incrbyfloat", "key increment:double"),
    ("append", "key value"),
    ("strlen", "key"),
    ("getrange", "key start end"),
    ("substr", "key start end"),
    ("setrange", "key offset value"),
    ("lcs", "key1:key key2:key [LEN] [IDX] [MINMATCHLEN min-match-len:integer] [WITHMATCHLEN]"),
    // keys
    ("del", "key [key ...]"),
    ("unlink", "key [key ...]"),
    ("exists", "key [key ...]"),
    ("type", "key"),
    ("keys", "pattern"),
    ("scan", "cursor [MATCH pattern] [COUNT count] [TYPE type]"),
    ("rename", "key newkey"),
    ("renamenx", "key newkey"),
    ("randomkey", ""),
    ("copy", "source destination [DB destination-db] [REPLACE]"),
    ("expire", "key seconds [NX|XX|GT|LT]"),
    ("pexpire", "key milliseconds [NX|XX|GT|LT]"),
    ("expireat", "key unix-time-seconds [NX|XX|GT|LT]"),
    ("pexpireat", "key unix-time-milliseconds [NX|XX|GT|LT]"),
    ("ttl", "key"),
    ("pttl", "key"),
    ("expiretime", "key"),
    ("pexpiretime", "key"),
    ("persist", "key"),
    ("touch", "key [key ...]"),
    ("dbsize", ""),
    ("flushdb", "[ASYNC|SYNC]"),
    ("flushall", "[ASYNC|SYNC]"),
    // lists
    ("lpush", "key element [element ...]"),
    ("rpush", "key element [element ...]"),
    ("lpushx", "key element [element ...]"),
    ("rpushx", "key element [element ...]"),
    ("lpop", "key [count]"),
    ("rpop", "key [count]"),
    ("llen", "key"),
    ("lrange", "key start stop"),
    ("lindex", "key index"),
    ("lset", "key index element"),
    ("lrem", "key count element"),
    ("ltrim", "key start stop"),
    ("linsert", "key <BEFORE|AFTER> pivot element"),
    ("lpos", "key element [RANK rank] [COUNT num-matches] [MAXLEN len]"),
    ("lmove", "source destination <LEFT|RIGHT> <LEFT|RIGHT>"),
    ("rpoplpush", "source destination"),
    // hashes
    ("hset", "key field value [field value ...]"),
    ("hsetnx", "key field value"),
    ("hget", "key field"),
    ("hmset", "key field value [field value ...]"),
    ("hmget", "key field [field ...]"),
    ("hdel", "key field [field ...]"),
    ("hexists", "key field"),
    ("hlen", "key"),
    ("hkeys", "key"),
    ("hvals", "key"),
    ("hgetall", "key"),
    ("hincrby", "key field increment"),
    ("hincrbyfloat", "key field increment:double"),
    ("hstrlen", "key field"),
    ("hscan", "key cursor [MATCH pattern] [COUNT count] [NOVALUES]"),
    ("hrandfield", "key [count [WITHVALUES]]"),
    // sets
    ("sadd", "key member [member ...]"),
    ("srem", "key member [member ...]"),
    ("smembers", "key"),
    ("sismember", "key member"),
    ("smismember", "key member [member ...]"),
    ("scard", "key"),
    ("spop", "key [count]"),
    ("srandmember", "key [count]"),
    ("smove", "source destination member"),
    ("sinter", "key [key ...]"),
    ("sunion", "key [key ...]"),
    ("sdiff", "key [key ...]"),
    ("sinterstore", "destination key [key ...]"),
    ("sunionstore", "destination key [key ...]"),
    ("sdiffstore", "destination key [key ...]"),
    ("sintercard", "numkeys key [key ...] [LIMIT limit]"),
    ("sscan", "key cursor [MATCH pattern] [COUNT count]"),
    // sorted sets
    ("zadd", "key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]"),
    ("zincrby", "key increment:double member"),
    ("zrem", "key member [member ...]"),
    ("zscore", "key member"),
    ("zmscore", "key member [member ...]"),
    ("zcard", "key"),
    ("zcount", "key min max"),
    ("zlexcount", "key min max"),
    ("zrange", "key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]"),
    ("zrangestore", "destination source min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]"),
    ("zrangebyscore", "key min max [WITHSCORES] [LIMIT offset count]"),
    ("zrevrange", "key start stop [WITHSCORES]"),
    ("zrevrangebyscore", "key max min [WITHSCORES] [LIMIT offset count]"),
    ("zrangebylex", "key min max [LIMIT offset count]"),
    ("zrevrangebylex", "key max min [LIMIT offset count]"),
    ("zrank", "key member [WITHSCORE]"),
    ("zrevrank", "key member [WITHSCORE]"),
    ("zremrangebyrank", "key start stop"),
    ("zremrangebyscore", "key min max"),
    ("zremrangebylex", "key min max"),
    ("zpopmin", "key [count]"),
    ("zpopmax", "key [count]"),
    ("zscan", "key cursor [MATCH pattern] [COUNT count]"),
    // bitmaps
    ("setbit", "key offset value"),
    ("getbit", "key offset"),
    ("bitcount", "key [start end [BYTE|BIT]]"),
    ("bitpos", "key bit [start [end [BYTE|BIT]]]"),
    ("bitop", "<AND|OR|XOR|NOT> destkey key [key ...]"),
    // Operations may come in any order and repeat; the notation lists each kind once.
    ("bitfield", "key [GET encoding offset [GET encoding offset ...]] [OVERFLOW <WRAP|SAT|FAIL>] [SET encoding offset value [SET encoding offset value ...]] [INCRBY encoding offset increment [INCRBY encoding offset increment ...]]"),
    ("sort", "key [BY pattern] [LIMIT offset count] [GET pattern [GET pattern ...]] [ASC|DESC] [ALPHA] [STORE destination]"),
    ("sort_ro", "key [BY pattern] [LIMIT offset count] [GET pattern [GET pattern ...]] [ASC|DESC] [ALPHA]"),
    // serialization
    ("dump", "key"),
    ("restore", "key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]"),
    // sorted-set algebra
    ("zunion", "numkeys key [key ...] [WEIGHTS weight [weight ...]] [AGGREGATE <SUM|MIN|MAX>] [WITHSCORES]"),
    ("zinter", "numkeys key [key ...] [WEIGHTS weight [weight ...]] [AGGREGATE <SUM|MIN|MAX>] [WITHSCORES]"),
    ("zdiff", "numkeys key [key ...] [WITHSCORES]"),
    ("zunionstore", "destination numkeys key [key ...] [WEIGHTS weight [weight ...]] [AGGREGATE <SUM|MIN|MAX>]"),
    ("zinterstore", "destination numkeys key [key ...] [WEIGHTS weight [weight ...]] [AGGREGATE <SUM|MIN|MAX>]"),
    ("zdiffstore", "destination numkeys key [key ...]"),
    ("zintercard", "numkeys key [key ...] [LIMIT limit]"),
    ("zrandmember", "key [count [WITHSCORES]]"),
    ("lmpop", "numkeys key [key ...] <LEFT|RIGHT> [COUNT count]"),
    ("zmpop", "numkeys key [key ...] <MIN|MAX> [COUNT count]"),
    ("subscribe", "channel [channel ...]"),
    ("unsubscribe", "[channel [channel ...]]"),
    ("psubscribe", "pattern [pattern ...]"),
    ("punsubscribe", "[pattern [pattern ...]]"),
    ("ssubscribe", "shardchannel [shardchannel ...]"),
    ("sunsubscribe", "[shardchannel [shardchannel ...]]"),
    ("publish", "channel message"),
    ("spublish", "shardchannel message"),
    ("pubsub", ""),
    ("blpop", "key [key ...] timeout:double"),
    ("brpop", "key [key ...] timeout:double"),
    ("blmove", "source destination <LEFT|RIGHT> <LEFT|RIGHT> timeout:double"),
    ("brpoplpush", "source destination timeout:double"),
    ("blmpop", "timeout:double numkeys key [key ...] <LEFT|RIGHT> [COUNT count]"),
    ("bzpopmin", "key [key ...] timeout:double"),
    ("bzpopmax", "key [key ...] timeout:double"),
    ("bzmpop", "timeout:double numkeys key [key ...] <MIN|MAX> [COUNT count]"),
    // geo
    ("geoadd", "key [NX|XX] [CH] longitude:double latitude:double member [longitude:double latitude:double member ...]"),
    ("geopos", "key [member [member ...]]"),
    ("geodist", "key member1 member2 [M|KM|FT|MI]"),
    ("geohash", "key [member [member ...]]"),
    ("geosearch", "key <FROMMEMBER member|FROMLONLAT longitude:double latitude:double> <BYRADIUS radius:double <M|KM|FT|MI>|BYBOX width:double height:double <M|KM|FT|MI>> [ASC|DESC] [COUNT count [ANY]] [WITHCOORD] [WITHDIST] [WITHHASH]"),
    ("geosearchstore", "destination source <FROMMEMBER member|FROMLONLAT longitude:double latitude:double> <BYRADIUS radius:double <M|KM|FT|MI>|BYBOX width:double height:double <M|KM|FT|MI>> [ASC|DESC] [COUNT count [ANY]] [STOREDIST]"),
    ("georadius", "key longitude:double latitude:double radius:double <M|KM|FT|MI> [WITHCOORD] [WITHDIST] [WITHHASH] [COUNT count [ANY]] [ASC|DESC] [STORE storekey|STOREDIST storedistkey]"),
    ("georadius_ro", "key longitude:double latitude:double radius:double <M|KM|FT|MI> [WITHCOORD] [WITHDIST] [WITHHASH] [COUNT count [ANY]] [ASC|DESC]"),
    ("georadiusbymember", "key member radius:double <M|KM|FT|MI> [WITHCOORD] [WITHDIST] [WITHHASH] [COUNT count [ANY]] [ASC|DESC] [STORE storekey|STOREDIST storedistkey]"),
    ("georadiusbymember_ro", "key member radius:double <M|KM|FT|MI> [WITHCOORD] [WITHDIST] [WITHHASH] [COUNT count [ANY]] [ASC|DESC]"),
    // hyperloglog
    ("pfadd", "key [element [element ...]]"),
    ("pfcount", "key [key ...]"),
    ("pfmerge", "destkey [sourcekey [sourcekey ...]]"),
    ("pfdebug", "subcommand key"),
    ("pfselftest", ""),
    ("bitfield_ro", "key [GET encoding offset [GET encoding offset ...]]"),
    // scripting
    ("eval", "script numkeys [key [key ...]] [arg [arg ...]]"),
    ("evalsha", "sha1 numkeys [key [key ...]] [arg [arg ...]]"),
    ("eval_ro", "script numkeys [key [key ...]] [arg [arg ...]]"),
    ("evalsha_ro", "sha1 numkeys [key [key ...]] [arg [arg ...]]"),
    ("fcall", "function numkeys [key [key ...]] [arg [arg ...]]"),
    ("fcall_ro", "function numkeys [key [key ...]] [arg [arg ...]]"),
    ("script", "subcommand [argument [argument ...]]"),
    ("function", "subcommand [argument [argument ...]]"),
    // streams
    ("xadd", "key [NOMKSTREAM] [MAXLEN|MINID] [=|~] [threshold] [LIMIT count] id field value [field value ...]"),
    ("xack", "key group id [id ...]"),
    ("xautoclaim", "key group consumer min-idle-time start [COUNT count] [JUSTID]"),
    ("xclaim", "key group consumer min-idle-time id [id ...] [IDLE ms] [TIME unix-time-milliseconds] [RETRYCOUNT count] [FORCE] [JUSTID] [LASTID lastid]"),
    ("xdel", "key id [id ...]"),
    ("xgroup", "subcommand [argument [argument ...]]"),
    ("xinfo", "subcommand [argument [argument ...]]"),
    ("xlen", "key"),
    ("xpending", "key group [IDLE min-idle-time] [start] [end] [count] [consumer]"),
    ("xrange", "key start end [COUNT count]"),
    ("xrevrange", "key end start [COUNT count]"),
    ("xread", "[COUNT count] [BLOCK milliseconds] STREAMS key [key ...] id [id ...]"),
    ("xreadgroup", "GROUP group consumer [COUNT count] [BLOCK milliseconds] [NOACK] STREAMS key [key ...] id [id ...]"),
    ("xsetid", "key last-id [ENTRIESADDED entries-added] [MAXDELETEDID max-deleted-id]"),
    ("xtrim", "key <MAXLEN|MINID> [=|~] threshold [LIMIT count]"),
];

/// A subcommand of a container command, named `container|sub` as in Redis's `COMMAND DOCS`.
#[derive(Debug, Clone, Copy)]
pub struct Subcommand {
    pub name: &'static str,
    pub syntax: &'static str,
    pub summary: &'static str,
}

const fn sub(name: &'static str, syntax: &'static str, summary: &'static str) -> Subcommand {
    Subcommand {
        name,
        syntax,
        summary,
    }
}

/// The subcommands of CLIENT, COMMAND and CONFIG, as the server implements them.
#[rustfmt::skip]
pub const SUBCOMMANDS: &[Subcommand] = &[
    sub("client|id", "", "Returns the unique ID of the connection."),
    sub("client|setname", "connection-name", "Sets the connection's name."),
    sub("client|getname", "", "Returns the connection's name."),
    sub("client|setinfo", "<LIB-NAME libname|LIB-VER libver>", "Records the name or version of the client library."),
    sub("client|capa", "capability [capability ...]", "Declares client capabilities: `redirect` asks for -REDIRECT host:port when a tenant moves."),
    sub("client|list", "[TYPE <NORMAL|MASTER>] [ID client-id [client-id ...]]", "Lists connections (a tenant connection sees only its tenant's)."),
    sub("client|info", "", "Describes this connection."),
    sub("client|kill", "<ip:port|[ID client-id] [TYPE <NORMAL|MASTER|SLAVE|REPLICA|PUBSUB>] [USER username] [ADDR ip:port] [LADDR ip:port] [SKIPME <YES|NO>]>", "Closes connections (a tenant connection may close only its tenant's)."),
    sub("client|unblock", "client-id [TIMEOUT|ERROR]", "Ends the blocking command a client waits in (a tenant connection reaches only its tenant's)."),
    sub("client|no-evict", "<ON|OFF>", "Accepted for compatibility; has no effect."),
    sub("client|no-touch", "<ON|OFF>", "Accepted for compatibility; has no effect."),
    sub("client|help", "", "Describes the CLIENT subcommands."),
    sub("command|count", "", "Returns the number of commands."),
    sub("command|list", "", "Returns the names of all commands."),
    sub("command|info", "[command-name [command-name ...]]", "Returns arity, flags and key positions of commands."),
    sub("command|docs", "[command-name [command-name ...]]", "Returns the documentation of commands: summary, group and arguments."),
    sub("command|getkeys", "command [arg [arg ...]]", "Returns the keys of a full command."),
    sub("command|help", "", "Describes the COMMAND subcommands."),
    sub("object|encoding", "key", "Returns the internal encoding of a value."),
    sub("object|refcount", "key", "Returns the reference count of a value."),
    sub("object|idletime", "key", "Returns the seconds since the key was last written."),
    sub("object|freq", "key", "Refused: Ferrite has no LFU policy, so access frequency is not tracked."),
    sub("object|help", "", "Describes the OBJECT subcommands."),
    sub("config|get", "parameter [parameter ...]", "Returns configuration parameters matching glob patterns."),
    sub("config|set", "parameter value [parameter value ...]", "Changes configuration parameters at run time."),
    sub("config|resetstat", "", "Resets the per-command statistics."),
    sub("slowlog|get", "[count]", "Returns the slow log's newest entries (default 10, -1 for all)."),
    sub("slowlog|len", "", "Returns the number of entries in the slow log."),
    sub("slowlog|reset", "", "Clears the slow log."),
    sub("slowlog|help", "", "Describes the SLOWLOG subcommands."),
    sub("latency|latest", "", "Returns the latest latency samples for all events."),
    sub("latency|history", "event", "Returns the latency samples of one event."),
    sub("latency|reset", "[event [event ...]]", "Resets the samples of events (all by default)."),
    sub("latency|doctor", "", "Returns a human-readable latency analysis."),
    sub("latency|help", "", "Describes the LATENCY subcommands."),
    sub("acl|whoami", "", "Returns the user (tenant) of this connection."),
    sub("acl|users", "", "Lists users: a tenant sees itself, the administrator every tenant."),
    sub("acl|list", "", "Lists users in ACL rule format."),
    sub("acl|getuser", "username", "Describes a user."),
    sub("acl|cat", "[category]", "Lists command categories, or the commands of one."),
    sub("acl|log", "[count|RESET]", "Returns the ACL log (no entries are recorded yet)."),
    sub("acl|genpass", "[bits:integer]", "Returns a random password."),
    sub("acl|help", "", "Describes the ACL subcommands."),
    sub("memory|usage", "key [SAMPLES count]", "Estimates the bytes a key and its value take."),
    sub("memory|stats", "", "Memory figures of the connection's tenant."),
    sub("memory|doctor", "", "Returns a human-readable memory analysis."),
    sub("memory|malloc-stats", "", "Allocator statistics (not available)."),
    sub("memory|purge", "", "Asks the allocator to release memory (nothing to do)."),
    sub("memory|help", "", "Describes the MEMORY subcommands."),
    sub("config|rewrite", "", "Refused: the server does not rewrite its configuration file."),
    sub("pubsub|channels", "[pattern]", "Returns the tenant's active channels."),
    sub("pubsub|numsub", "[channel [channel ...]]", "Returns a count of subscribers to channels."),
    sub("pubsub|numpat", "", "Returns a count of unique pattern subscriptions."),
    sub("pubsub|shardchannels", "[pattern]", "Returns the tenant's active shard channels."),
    sub("pubsub|shardnumsub", "[shardchannel [shardchannel ...]]", "Returns the count of subscribers of shard channels."),
    sub("pubsub|help", "", "Describes the PUBSUB subcommands."),
];

/// The syntax text of a command (lower-case name), if it has one.
pub fn syntax(name: &str) -> Option<&'static str> {
    SYNTAX.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The subcommands of a container command (lower-case name); empty for other commands.
pub fn subcommands(container: &str) -> impl Iterator<Item = &'static Subcommand> + '_ {
    SUBCOMMANDS.iter().filter(move |s| {
        s.name
            .split_once('|')
            .is_some_and(|(parent, _)| parent == container)
    })
}

/// The parsed arguments of a command or subcommand (`client|kill`); empty if it has none or
/// is unknown. Parsed once, on first use.
pub fn arguments(name: &str) -> &'static [Arg] {
    static PARSED: OnceLock<HashMap<&'static str, Vec<Arg>>> = OnceLock::new();
    let parsed = PARSED.get_or_init(|| {
        let commands = SYNTAX.iter().copied();
        let subs = SUBCOMMANDS.iter().map(|s| (s.name, s.syntax));
        // A table entry that does not parse is caught by the tests; at run time it just has no
        // argument documentation rather than taking the server down.
        commands
            .chain(subs)
            .map(|(n, s)| (n, parse(s).unwrap_or_default()))
            .collect()
    });
    parsed.get(name).map_or(&[], Vec::as_slice)
}

/// The type of an argument, named as in `COMMAND DOCS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    Key,
    String,
    Integer,
    Double,
    UnixTime,
    PureToken,
    OneOf,
    Block,
}

impl ArgType {
    pub fn as_str(self) -> &'static str {
        match self {
            ArgType::Key => "key",
            ArgType::String => "string",
            ArgType::Integer => "integer",
            ArgType::Double => "double",
            ArgType::UnixTime => "unix-time",
            ArgType::PureToken => "pure-token",
            ArgType::OneOf => "oneof",
            ArgType::Block => "block",
        }
    }

    /// The types that may be written after a colon (`increment:double`).
    fn from_annotation(s: &str) -> Option<ArgType> {
        Some(match s {
            "key" => ArgType::Key,
            "string" => ArgType::String,
            "integer" => ArgType::Integer,
            "double" => ArgType::Double,
            "unix-time" => ArgType::UnixTime,
            _ => return None,
        })
    }

    /// The type an argument gets from its name alone.
    fn from_name(name: &str) -> ArgType {
        match name {
            "source" | "destination" => ArgType::Key,
            n if n.ends_with("key") => ArgType::Key,
            "seconds" | "milliseconds" | "count" | "index" | "start" | "stop" | "end"
            | "offset" | "cursor" | "numkeys" | "limit" | "rank" | "num-matches" | "len"
            | "increment" | "decrement" | "protover" | "client-id" | "destination-db"
            | "ops-per-sec" | "streams" | "keys" | "bytes-per-sec" | "wire-version" => {
                ArgType::Integer
            }
            "score" => ArgType::Double,
            "unix-time-seconds" | "unix-time-milliseconds" => ArgType::UnixTime,
            _ => ArgType::String,
        }
    }
}

/// One argument, in the shape of an entry of `COMMAND DOCS`'s `arguments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    pub kind: ArgType,
    /// The literal word that introduces the argument (`EX` of `EX seconds`), or the word itself
    /// for a pure token.
    pub token: Option<String>,
    pub optional: bool,
    pub multiple: bool,
    /// Each repetition repeats the token (`GET pattern [GET pattern ...]`).
    pub multiple_token: bool,
    /// The alternatives of a one-of, or the parts of a block.
    pub args: Vec<Arg>,
}

impl Arg {
    fn named(name: &str) -> Result<Arg, SyntaxError> {
        let (name, kind) = match name.rsplit_once(':') {
            Some((n, t)) => match ArgType::from_annotation(t) {
                Some(kind) => (n, kind),
                None => (name, ArgType::from_name(name)),
            },
            None => (name, ArgType::from_name(name)),
        };
        if name.is_empty() || is_token(name) {
            return Err(SyntaxError::new(format!("bad argument name '{name}'")));
        }
        Ok(Arg::leaf(name, kind, None))
    }

    fn pure_token(word: &str) -> Arg {
        Arg::leaf(&word.to_ascii_lowercase(), ArgType::PureToken, Some(word))
    }

    fn leaf(name: &str, kind: ArgType, token: Option<&str>) -> Arg {
        Arg {
            name: name.to_string(),
            kind,
            token: token.map(str::to_string),
            optional: false,
            multiple: false,
            multiple_token: false,
            args: Vec::new(),
        }
    }

    fn group(kind: ArgType, args: Vec<Arg>) -> Arg {
        let name = args
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join("-");
        Arg {
            args,
            ..Arg::leaf(&name, kind, None)
        }
    }

    /// A block of several arguments; a leading literal word becomes the block's token
    /// (`LIMIT offset count`, `RETRY [FORCE]`), as Redis describes such blocks.
    fn block(mut args: Vec<Arg>) -> Arg {
        let lead = args.first().filter(|a| !a.optional && !a.multiple);
        let hoist = match lead {
            Some(a) if a.kind == ArgType::PureToken => {
                let token = a.token.clone();
                args.remove(0);
                token
            }
            Some(a) if a.token.is_some() => args[0].token.take(),
            _ => None,
        };
        let mut block = Arg::group(ArgType::Block, args);
        if let Some(t) = hoist {
            block.name = t.to_ascii_lowercase();
            block.token = Some(t);
        }
        block
    }
}

/// Why a syntax text does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(String);

impl SyntaxError {
    fn new(msg: impl Into<String>) -> SyntaxError {
        SyntaxError(msg.into())
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "syntax error in command syntax: {}", self.0)
    }
}

impl std::error::Error for SyntaxError {}

/// A literal word: no lower-case letter, at least one upper-case one.
fn is_token(w: &str) -> bool {
    w.bytes().any(|c| c.is_ascii_uppercase()) && !w.bytes().any(|c| c.is_ascii_lowercase())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex<'a> {
    Open(u8),
    Close(u8),
    Bar,
    Ellipsis,
    Word(&'a str),
}

fn lex(s: &str) -> Vec<Lex<'_>> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' => i += 1,
            c @ (b'[' | b'<') => {
                out.push(Lex::Open(c));
                i += 1;
            }
            c @ (b']' | b'>') => {
                out.push(Lex::Close(c));
                i += 1;
            }
            b'|' => {
                out.push(Lex::Bar);
                i += 1;
            }
            _ => {
                let start = i;
                while i < bytes.len() && !b" []<>|".contains(&bytes[i]) {
                    i += 1;
                }
                let w = &s[start..i];
                out.push(if w == "..." {
                    Lex::Ellipsis
                } else {
                    Lex::Word(w)
                });
            }
        }
    }
    out
}

/// What the reader sees before tokens are attached and repetitions folded.
#[derive(Debug, Clone)]
enum Raw<'a> {
    Word(&'a str),
    Ellipsis,
    /// `[...]` (optional) or `<...>` (required): alternatives, each a sequence.
    Group {
        optional: bool,
        alts: Vec<Vec<Raw<'a>>>,
    },
}

struct Reader<'a> {
    lex: Vec<Lex<'a>>,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads a sequence up to (not including) a `|`, a closing bracket or the end.
    fn sequence(&mut self) -> Result<Vec<Raw<'a>>, SyntaxError> {
        let mut items = Vec::new();
        while let Some(&l) = self.lex.get(self.pos) {
            match l {
                Lex::Bar | Lex::Close(_) => break,
                Lex::Word(w) => items.push(Raw::Word(w)),
                Lex::Ellipsis => items.push(Raw::Ellipsis),
                Lex::Open(open) => {
                    self.pos += 1;
                    let close = if open == b'[' { b']' } else { b'>' };
                    let mut alts = vec![self.sequence()?];
                    loop {
                        match self.lex.get(self.pos) {
                            Some(Lex::Bar) => {
                                self.pos += 1;
                                alts.push(self.sequence()?);
                            }
                            Some(&Lex::Close(c)) if c == close => break,
                            _ => {
                                return Err(SyntaxError::new(format!(
                                    "'{}' is not closed by '{}'",
                                    open as char, close as char
                                )));
                            }
                        }
                    }
                    items.push(Raw::Group {
                        optional: open == b'[',
                        alts,
                    });
                }
            }
            self.pos += 1;
        }
        Ok(items)
    }
}

/// Parses a syntax text (see the module documentation) into `COMMAND DOCS` arguments.
pub fn parse(s: &str) -> Result<Vec<Arg>, SyntaxError> {
    let mut r = Reader {
        lex: lex(s),
        pos: 0,
    };
    let items = r.sequence()?;
    match r.lex.get(r.pos) {
        None => resolve(&items),
        Some(Lex::Bar) => Err(SyntaxError::new(
            "a choice outside brackets: write <A|B> or [A|B]",
        )),
        Some(_) => Err(SyntaxError::new("unbalanced closing bracket")),
    }
}

/// Attaches tokens to what they introduce, folds `x [x ...]` repetitions and turns groups into
/// one-ofs and blocks.
fn resolve(items: &[Raw<'_>]) -> Result<Vec<Arg>, SyntaxError> {
    let mut out: Vec<Arg> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        match &items[i] {
            Raw::Word(w) if is_token(w) => {
                let introduces = match items.get(i + 1) {
                    Some(Raw::Word(next)) if !is_token(next) => Some(Arg::named(next)?),
                    Some(Raw::Group {
                        optional: false,
                        alts,
                    }) => Some(group_arg(alts, false)?),
                    _ => None,
                };
                match introduces {
                    Some(mut a) if a.token.is_none() => {
                        a.token = Some(w.to_string());
                        out.push(a);
                        i += 1;
                    }
                    Some(_) => {
                        return Err(SyntaxError::new(format!(
                            "'{w}' introduces something that already has a token"
                        )));
                    }
                    None => out.push(Arg::pure_token(w)),
                }
            }
            Raw::Word(w) => out.push(Arg::named(w)?),
            Raw::Ellipsis => {
                return Err(SyntaxError::new("'...' only ends a repetition: x [x ...]"));
            }
            Raw::Group { optional, alts } => match repetition(alts) {
                Some(pattern) => fold_repetition(&mut out, &resolve(pattern)?)?,
                None => out.push(group_arg(alts, *optional)?),
            },
        }
        i += 1;
    }
    Ok(out)
}

/// The repeated items of `[x ...]`, if this group is one.
fn repetition<'r, 'a>(alts: &'r [Vec<Raw<'a>>]) -> Option<&'r [Raw<'a>]> {
    match alts {
        [only] => match only.split_last() {
            Some((Raw::Ellipsis, pattern)) => Some(pattern),
            _ => None,
        },
        _ => None,
    }
}

/// Marks the arguments just before `[pattern ...]` as repeatable.
fn fold_repetition(out: &mut Vec<Arg>, pattern: &[Arg]) -> Result<(), SyntaxError> {
    let n = pattern.len();
    let mismatch = || SyntaxError::new("'[x ...]' does not follow the x it repeats");
    if n == 0 || out.len() < n {
        return Err(mismatch());
    }
    let tail = out.split_off(out.len() - n);
    let same = tail == pattern;
    // `ID client-id [client-id ...]`: the token introduces the whole list.
    let token_once = n == 1
        && tail[0].token.is_some()
        && pattern[0].token.is_none()
        && Arg {
            token: None,
            ..tail[0].clone()
        } == pattern[0];
    if !same && !token_once {
        return Err(mismatch());
    }
    let mut a = if n == 1 {
        tail.into_iter().next().ok_or_else(mismatch)?
    } else {
        Arg::block(tail)
    };
    a.multiple = true;
    a.multiple_token = same && a.token.is_some();
    out.push(a);
    Ok(())
}

/// The argument a bracketed group stands for.
fn group_arg(alts: &[Vec<Raw<'_>>], optional: bool) -> Result<Arg, SyntaxError> {
    let mut choices = Vec::with_capacity(alts.len());
    for alt in alts {
        let mut args = resolve(alt)?;
        let arg = match args.len() {
            0 => return Err(SyntaxError::new("an empty alternative")),
            1 => args.remove(0),
            _ => Arg::block(args),
        };
        choices.push(arg);
    }
    let mut a = if choices.len() == 1 {
        choices.remove(0)
    } else {
        Arg::group(ArgType::OneOf, choices)
    };
    if optional {
        if a.optional {
            return Err(SyntaxError::new("doubly optional: [[x]]"));
        }
        a.optional = true;
    }
    Ok(a)
}

/// Writes arguments back in the notation of this module; `render(&parse(s)?) == s` for the texts
/// of the tables (the tests check it), so the tables are written the one way the parser reads.
pub fn render(args: &[Arg]) -> String {
    args.iter().map(render_arg).collect::<Vec<_>>().join(" ")
}

fn render_arg(a: &Arg) -> String {
    // The argument without its optional brackets and repetition.
    let body = |with_token: bool| -> String {
        let core = match a.kind {
            ArgType::PureToken => return a.token.clone().unwrap_or_default(),
            ArgType::OneOf => {
                let alts: Vec<_> = a.args.iter().map(render_arg).collect();
                let alts = alts.join("|");
                // An optional choice without a token writes its brackets once: [NX|XX].
                if a.optional && a.token.is_none() {
                    alts
                } else {
                    format!("<{alts}>")
                }
            }
            ArgType::Block => render(&a.args),
            kind if kind == ArgType::from_name(&a.name) => a.name.clone(),
            kind => format!("{}:{}", a.name, kind.as_str()),
        };
        match (&a.token, with_token) {
            (Some(t), true) => format!("{t} {core}"),
            _ => core,
        }
    };
    let mut s = body(true);
    if a.multiple {
        s = format!("{s} [{} ...]", body(a.multiple_token));
    }
    if a.optional {
        s = format!("[{s}]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;

    fn arg(name: &str, kind: ArgType) -> Arg {
        Arg::leaf(name, kind, None)
    }

    fn token(name: &str, kind: ArgType, token: &str) -> Arg {
        Arg::leaf(name, kind, Some(token))
    }

    fn optional(mut a: Arg) -> Arg {
        a.optional = true;
        a
    }

    fn multiple(mut a: Arg) -> Arg {
        a.multiple = true;
        a
    }

    fn with(kind: ArgType, name: &str, args: Vec<Arg>) -> Arg {
        Arg {
            args,
            ..Arg::leaf(name, kind, None)
        }
    }

    #[test]
    fn every_command_has_a_syntax_and_it_parses_back_to_itself() {
        for s in spec::all() {
            let text = syntax(s.name).unwrap_or_else(|| panic!("no syntax for {}", s.name));
            let args = parse(text).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert_eq!(render(&args), text, "{} does not render back", s.name);
            assert_eq!(arguments(s.name), args.as_slice());
        }
        for sub in SUBCOMMANDS {
            let args = parse(sub.syntax).unwrap_or_else(|e| panic!("{}: {e}", sub.name));
            assert_eq!(
                render(&args),
                sub.syntax,
                "{} does not render back",
                sub.name
            );
            let (parent, _) = sub.name.split_once('|').unwrap();
            assert!(spec::lookup(parent.as_bytes()).is_some(), "{}", sub.name);
        }
    }

    #[test]
    fn the_tables_name_only_known_commands_once() {
        let mut seen = std::collections::HashSet::new();
        for (name, _) in SYNTAX {
            assert!(seen.insert(*name), "{name} twice");
            assert!(
                spec::lookup(name.as_bytes()).is_some(),
                "{name} is no command"
            );
        }
        for s in SUBCOMMANDS {
            assert!(seen.insert(s.name), "{} twice", s.name);
        }
        assert_eq!(subcommands("client").count(), 12);
        assert_eq!(subcommands("get").count(), 0);
    }

    /// Arity in the table and the least number of arguments the syntax allows agree.
    #[test]
    fn syntax_agrees_with_arity() {
        // Needs at least one of its optional settings, which the notation cannot say.
        const AT_LEAST_ONE_OPTION: &[&str] = &["tenant.migrate.update"];
        fn least(a: &Arg) -> i32 {
            if a.optional {
                return 0;
            }
            let own = i32::from(a.token.is_some());
            own + match a.kind {
                ArgType::PureToken => 0,
                ArgType::Block => a.args.iter().map(least).sum(),
                ArgType::OneOf => a.args.iter().map(least).min().unwrap_or(0),
                _ => 1,
            }
        }
        for s in spec::all() {
            // Containers are checked through their subcommands.
            if subcommands(s.name).count() > 0 {
                continue;
            }
            let args = arguments(s.name);
            let min = 1 + args.iter().map(least).sum::<i32>();
            let open = args.iter().any(|a| a.optional || a.multiple);
            if s.arity > 0 {
                assert!(!open, "{} has a fixed arity but optional arguments", s.name);
                assert_eq!(min, s.arity, "{}", s.name);
            } else if AT_LEAST_ONE_OPTION.contains(&s.name) {
                assert!(min < -s.arity, "{}", s.name);
            } else {
                assert_eq!(min, -s.arity, "{}: least arguments vs arity", s.name);
            }
        }
    }

    #[test]
    fn set() {
        let args = parse(syntax("set").unwrap()).unwrap();
        let nx_xx = optional(with(
            ArgType::OneOf,
            "nx-xx",
            vec![
                token("nx", ArgType::PureToken, "NX"),
                token("xx", ArgType::PureToken, "XX"),
            ],
        ));
        let expiry = optional(with(
            ArgType::OneOf,
            "seconds-milliseconds-unix-time-seconds-unix-time-milliseconds-keepttl",
            vec![
                token("seconds", ArgType::Integer, "EX"),
                token("milliseconds", ArgType::Integer, "PX"),
                token("unix-time-seconds", ArgType::UnixTime, "EXAT"),
                token("unix-time-milliseconds", ArgType::UnixTime, "PXAT"),
                token("keepttl", ArgType::PureToken, "KEEPTTL"),
            ],
        ));
        assert_eq!(
            args,
            vec![
                arg("key", ArgType::Key),
                arg("value", ArgType::String),
                nx_xx,
                optional(token("get", ArgType::PureToken, "GET")),
                expiry,
            ]
        );
    }

    #[test]
    fn repetitions() {
        assert_eq!(
            parse("key [key ...]").unwrap(),
            vec![multiple(arg("key", ArgType::Key))]
        );
        assert_eq!(
            parse("[section [section ...]]").unwrap(),
            vec![optional(multiple(arg("section", ArgType::String)))]
        );
        // A block repeats.
        assert_eq!(
            parse("key score member [score member ...]").unwrap(),
            vec![
                arg("key", ArgType::Key),
                multiple(with(
                    ArgType::Block,
                    "score-member",
                    vec![
                        arg("score", ArgType::Double),
                        arg("member", ArgType::String)
                    ]
                )),
            ]
        );
        // The token once, before the list...
        let mut ids = multiple(token("client-id", ArgType::Integer, "ID"));
        assert_eq!(
            parse("[ID client-id [client-id ...]]").unwrap(),
            vec![optional(ids.clone())]
        );
        // ...or with every element.
        ids.multiple_token = true;
        assert_eq!(parse("ID client-id [ID client-id ...]").unwrap(), vec![ids]);
        for bad in [
            "key [member ...]",
            "[key ...]",
            "key ...",
            "a [b ...] [c ...]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blocks_take_their_leading_token() {
        assert_eq!(
            parse("[LIMIT offset count]").unwrap(),
            vec![optional(Arg {
                token: Some("LIMIT".into()),
                ..with(
                    ArgType::Block,
                    "limit",
                    vec![
                        arg("offset", ArgType::Integer),
                        arg("count", ArgType::Integer)
                    ]
                )
            })]
        );
        let cutover = parse(syntax("tenant.migrate.cutover").unwrap()).unwrap();
        let choice = &cutover[1];
        assert_eq!((choice.kind, choice.optional), (ArgType::OneOf, true));
        let kinds: Vec<_> = choice
            .args
            .iter()
            .map(|a| (a.kind, a.token.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (ArgType::PureToken, Some("FORCE")),
                (ArgType::Block, Some("RETRY")),
                (ArgType::Block, Some("SCHEDULED")),
                (ArgType::PureToken, Some("UNSCHEDULE")),
                (ArgType::Block, Some("PATTERN")),
                (ArgType::Block, Some("DNS")),
            ]
        );
        assert_eq!(choice.args[2].args[0].name, "rfc3339-time");
        assert!(choice.args[2].args[1].optional);
    }

    #[test]
    fn required_choices_and_tokens_before_them() {
        assert_eq!(
            parse("<LEFT|RIGHT>").unwrap(),
            vec![with(
                ArgType::OneOf,
                "left-right",
                vec![
                    token("left", ArgType::PureToken, "LEFT"),
                    token("right", ArgType::PureToken, "RIGHT")
                ]
            )]
        );
        let mode = &parse(syntax("tenant.migrate").unwrap()).unwrap()[2];
        assert_eq!(mode.token.as_deref(), Some("MODE"));
        assert_eq!((mode.kind, mode.optional), (ArgType::OneOf, true));
        // live, fast, continuous, incremental
        assert_eq!(mode.args.len(), 4);
        // Names with a colon that is not a type stay names; a type after a colon is one.
        let target = &parse(syntax("tenant.migrate").unwrap()).unwrap()[1];
        assert_eq!(*target, token("host:port", ArgType::String, "TARGET"));
        assert_eq!(
            parse("increment:double").unwrap(),
            vec![arg("increment", ArgType::Double)]
        );
    }

    #[test]
    fn malformed_texts_are_refused() {
        for bad in [
            "LEFT|RIGHT",
            "[a",
            "a]",
            "<a|b",
            "[a|]",
            "[[a]]",
            "EX <SECONDS x>",
            ":key",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(parse("").unwrap(), vec![]);
    }
}
