//! `switchboard`: publish Socket.IO events to Switchboard gateways from a shell,
//! and look at the fleet (`status`, `sockets`, `rooms`).

mod cli_fleet;

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rmpv::Value;
use switchboard_broadcaster::fleet::Fleet;
use switchboard_broadcaster::{
    BroadcastOperator, Broadcaster, BroadcasterConfig, Delivery, Mode, PublishError, RedisSettings,
    Secret, SubscriptionMode,
};

/// Exit code for bad usage or bad input (clap uses it for usage errors too).
const EXIT_USAGE: u8 = 2;
/// Exit code when Redis is unreachable, times out or refuses the command.
const EXIT_REDIS: u8 = 3;
/// Exit code for `--require-delivery` when no subscriber received the message.
const EXIT_UNDELIVERED: u8 = 4;
/// Exit code of a fleet command when some servers did not answer in time
/// (what did answer is printed).
const EXIT_INCOMPLETE: u8 = 5;

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "Publish Socket.IO events to Switchboard gateways (and Node socket.io servers) through Redis; list the fleet's servers, sockets and rooms",
    long_about = "Publish Socket.IO events to Switchboard gateways (and Node Socket.IO servers using \
@socket.io/redis-adapter) through Redis. Messages are byte-identical to @socket.io/redis-emitter. \
status, sockets and rooms ask every server of the fleet (gateways and Node servers) what it holds.",
    after_help = "PASSWORDS are read from the environment, never from flags: SWITCHBOARD_REDIS__PASSWORD \
(or --password-file), SWITCHBOARD_REDIS__SENTINEL_PASSWORD; or in the --redis URL.\n\n\
EXIT CODES:\n  0  published (or, for status / sockets / rooms, every server answered)\n  2  bad usage or bad input (invalid JSON, reserved event name, bad setting...)\n  \
3  Redis unreachable, timed out, refused the credentials, the TLS handshake or the command (check --redis / SWITCHBOARD_REDIS_URL)\n  \
4  --require-delivery was given and no subscriber received the message\n  \
5  status / sockets / rooms: some servers did not answer within --timeout-ms (the answers that came are printed)\n\n\
EXAMPLES:\n  switchboard publish --role admin --event ticket_updated --data '{\"id\":7}'\n  \
switchboard publish --user 42 --event notification --args '[\"assigned\", 7]'\n  \
echo '{\"id\":7}' | switchboard publish --to room1 --event update --data -\n  \
switchboard kick --user 42 --close\n  switchboard join --user 42 --room ticket:7\n  \
switchboard status\n  switchboard presence chat_123\n  switchboard sockets --user 42\n  switchboard sockets --room ticket:7 --json\n  switchboard rooms"
)]
struct Cli {
    /// Redis URL (standalone mode): redis://host:6379, rediss://user:password@host:6380 for TLS.
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true,
        help_heading = "Connection"
    )]
    redis: String,
    #[command(flatten)]
    connection: Connection,
    /// Channel key prefix (the `key` option of the Node adapter/emitter).
    #[arg(
        long,
        env = "SWITCHBOARD_KEY",
        default_value = "socket.io",
        global = true,
        help_heading = "Connection"
    )]
    key: String,
    /// Give up after this many milliseconds.
    #[arg(
        long,
        default_value_t = 2000,
        global = true,
        help_heading = "Connection"
    )]
    timeout_ms: u64,
    /// Room name template for --user.
    #[arg(
        long,
        default_value = "user:{id}",
        global = true,
        help_heading = "Rooms"
    )]
    user_room_template: String,
    /// Room name template for --role.
    #[arg(
        long,
        default_value = "role:{role}",
        global = true,
        help_heading = "Rooms"
    )]
    role_room_template: String,
    /// Exit with code 4 when no subscriber (gateway or server) received the message.
    #[arg(long, global = true)]
    require_delivery: bool,
    /// The fleet's bus: `pubsub` (the redis-adapter format) or `streams` (the
    /// @socket.io/redis-streams-adapter 0.3 format, gateways with redis.bus = "streams").
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS__BUS",
        default_value = "pubsub",
        value_parser = ["pubsub", "streams"],
        global = true,
        help_heading = "Connection"
    )]
    bus: String,
    /// Streams mode: the stream key (the fleet's redis.stream_name / streamName).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS__STREAM_NAME",
        default_value = "socket.io",
        global = true,
        help_heading = "Connection"
    )]
    stream_name: String,
    /// Streams mode: the fleet's redis.stream_count (streamCount).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS__STREAM_COUNT",
        default_value_t = std::num::NonZeroU32::MIN,
        global = true,
        help_heading = "Connection"
    )]
    stream_count: std::num::NonZeroU32,
    /// Streams mode: XADD ... MAXLEN ~ this (the fleet's redis.stream_max_len / maxLen).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS__STREAM_MAX_LEN",
        default_value_t = 10_000,
        global = true,
        help_heading = "Connection"
    )]
    stream_max_len: u64,
    #[command(subcommand)]
    command: Command,
}

/// How to reach Redis beyond a standalone URL: TLS files, ACL user, Sentinel, Cluster. The
/// environment variables are the gateway's (`SWITCHBOARD_REDIS__<KEY>`).
#[derive(Args, Debug)]
struct Connection {
    /// standalone (--redis), sentinel (--sentinel, --master-name) or cluster (--node).
    #[arg(
        long,
        value_enum,
        env = "SWITCHBOARD_REDIS__MODE",
        default_value = "standalone",
        global = true,
        help_heading = "Connection"
    )]
    mode: ModeArg,
    /// A sentinel, HOST:PORT (repeatable, or comma-separated in the variable).
    #[arg(
        long = "sentinel",
        value_name = "HOST:PORT",
        env = "SWITCHBOARD_REDIS__SENTINELS",
        value_delimiter = ',',
        global = true,
        help_heading = "Connection"
    )]
    sentinels: Vec<String>,
    /// The master's name in the sentinels' configuration.
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS__MASTER_NAME",
        global = true,
        help_heading = "Connection"
    )]
    master_name: Option<String>,
    /// A cluster node, HOST:PORT (repeatable, or comma-separated in the variable).
    #[arg(
        long = "node",
        value_name = "HOST:PORT",
        env = "SWITCHBOARD_REDIS__NODES",
        value_delimiter = ',',
        global = true,
        help_heading = "Connection"
    )]
    nodes: Vec<String>,
    /// Use TLS with the --sentinel / --node addresses (a rediss:// URL implies it).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS__TLS",
        global = true,
        help_heading = "TLS and ACL"
    )]
    tls: bool,
    /// PEM file of the CA that signed the server's certificate (default: system roots).
    #[arg(
        long,
        value_name = "PATH",
        env = "SWITCHBOARD_REDIS__TLS_CA_FILE",
        global = true,
        help_heading = "TLS and ACL"
    )]
    tls_ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate, for servers that require one (mutual TLS).
    #[arg(
        long,
        value_name = "PATH",
        env = "SWITCHBOARD_REDIS__TLS_CERT_FILE",
        global = true,
        help_heading = "TLS and ACL"
    )]
    tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(
        long,
        value_name = "PATH",
        env = "SWITCHBOARD_REDIS__TLS_KEY_FILE",
        global = true,
        help_heading = "TLS and ACL"
    )]
    tls_key_file: Option<std::path::PathBuf>,
    /// ACL user (its password: SWITCHBOARD_REDIS__PASSWORD or --password-file).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS__USERNAME",
        global = true,
        help_heading = "TLS and ACL"
    )]
    username: Option<String>,
    /// File holding the Redis password.
    #[arg(
        long,
        value_name = "PATH",
        env = "SWITCHBOARD_REDIS__PASSWORD_FILE",
        global = true,
        help_heading = "TLS and ACL"
    )]
    password_file: Option<std::path::PathBuf>,
    /// ACL user of the sentinels, if they require one (password: SWITCHBOARD_REDIS__SENTINEL_PASSWORD).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS__SENTINEL_USERNAME",
        global = true,
        help_heading = "TLS and ACL"
    )]
    sentinel_username: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum ModeArg {
    Standalone,
    Sentinel,
    Cluster,
}

/// The flag (or variable) that sets a `redis.<key>` setting, for error messages.
fn flag_of(key: &str) -> &'static str {
    match key {
        "url" => "--redis",
        "sentinels" => "--sentinel",
        "master_name" => "--master-name",
        "nodes" => "--node",
        "tls_ca_file" => "--tls-ca-file",
        "tls_cert_file" => "--tls-cert-file",
        "tls_key_file" => "--tls-key-file",
        "username" => "--username",
        "password" => "SWITCHBOARD_REDIS__PASSWORD",
        "password_file" => "--password-file",
        "sentinel_password" => "SWITCHBOARD_REDIS__SENTINEL_PASSWORD",
        "timeout_ms" => "--timeout-ms",
        _ => "a connection setting",
    }
}

impl Connection {
    /// The Redis settings these flags and the environment describe.
    fn settings(&self, url: &str, timeout_ms: u64) -> Result<RedisSettings, Failure> {
        let env_secret = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new)
        };
        let mode = match self.mode {
            ModeArg::Standalone => Mode::Standalone,
            ModeArg::Sentinel => Mode::Sentinel,
            ModeArg::Cluster => Mode::Cluster,
        };
        let settings = RedisSettings {
            mode,
            url: (mode == Mode::Standalone).then(|| url.to_string()),
            sentinels: self.sentinels.clone(),
            master_name: self.master_name.clone(),
            nodes: self.nodes.clone(),
            tls: self.tls,
            tls_ca_file: self.tls_ca_file.clone(),
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            username: self.username.clone(),
            password: env_secret("SWITCHBOARD_REDIS__PASSWORD"),
            password_file: self.password_file.clone(),
            sentinel_username: self.sentinel_username.clone(),
            sentinel_password: env_secret("SWITCHBOARD_REDIS__SENTINEL_PASSWORD"),
            timeout_ms: timeout_ms.max(1),
            ..RedisSettings::default()
        };
        settings.validate().map_err(|e| {
            usage(format!(
                "invalid {} (redis.{}): {}",
                flag_of(e.key),
                e.key,
                e.message
            ))
        })?;
        Ok(settings)
    }
}

#[derive(Args, Debug, Default)]
struct Target {
    /// Target a room (repeatable; sockets in any of the rooms receive it once).
    #[arg(long = "to", value_name = "ROOM")]
    to: Vec<String>,
    /// Target a user's room (repeatable), `user:{id}` by default.
    #[arg(long = "user", value_name = "ID")]
    user: Vec<String>,
    /// Target a role's room (repeatable), `role:{role}` by default.
    #[arg(long = "role", value_name = "ROLE")]
    role: Vec<String>,
    /// Exclude a room or a socket id (repeatable).
    #[arg(long = "except", value_name = "ROOM")]
    except: Vec<String>,
    /// Namespace.
    #[arg(long, default_value = "/", value_name = "NSP")]
    namespace: String,
}

impl Target {
    fn is_empty(&self) -> bool {
        self.to.is_empty() && self.user.is_empty() && self.role.is_empty()
    }

    fn apply(&self, b: &Broadcaster) -> BroadcastOperator {
        let mut op = b.of(&self.namespace).to_rooms(self.to.iter().cloned());
        for u in &self.user {
            op = op.to_user(u);
        }
        for r in &self.role {
            op = op.to_role(r);
        }
        op.except_rooms(self.except.iter().cloned())
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Emit an event to clients. Without --to/--user/--role it goes to every client of the namespace.
    Publish {
        #[command(flatten)]
        target: Target,
        /// Event name.
        #[arg(long)]
        event: String,
        /// ONE argument, any JSON (an array is one array argument). `-` reads it from stdin.
        #[arg(long, group = "payload", value_name = "JSON")]
        data: Option<String>,
        /// ONE argument read from a JSON file (`-` for stdin).
        #[arg(long, group = "payload", value_name = "PATH")]
        data_file: Option<String>,
        /// SEVERAL arguments: a JSON array whose elements are the arguments, e.g. '[1,"a"]'.
        #[arg(long, group = "payload", value_name = "JSON_ARRAY")]
        args: Option<String>,
        /// Volatile: clients that cannot take the event right now miss it.
        #[arg(long)]
        volatile: bool,
        /// For a fleet on sharded pub/sub (gateways with redis.pubsub = "sharded", Node servers
        /// on createShardedAdapter): SPUBLISH the sharded adapter's message, to the room's
        /// channel in `dynamic` mode when one room is targeted.
        #[arg(long, value_name = "static|dynamic")]
        sharded: Option<String>,
    },
    /// Disconnect the targeted sockets (e.g. all sockets of a user).
    Kick {
        #[command(flatten)]
        target: Target,
        /// Also close the underlying connection (otherwise only the namespace is left).
        #[arg(long)]
        close: bool,
        /// Allow targeting every socket of the namespace (no --to/--user/--role).
        #[arg(long)]
        all: bool,
    },
    /// Make the targeted sockets join rooms.
    Join {
        #[command(flatten)]
        target: Target,
        /// Room to join (repeatable).
        #[arg(long = "room", required = true, value_name = "ROOM")]
        rooms: Vec<String>,
        /// Allow targeting every socket of the namespace.
        #[arg(long)]
        all: bool,
    },
    /// Make the targeted sockets leave rooms.
    Leave {
        #[command(flatten)]
        target: Target,
        /// Room to leave (repeatable).
        #[arg(long = "room", required = true, value_name = "ROOM")]
        rooms: Vec<String>,
        /// Allow targeting every socket of the namespace.
        #[arg(long)]
        all: bool,
    },
    /// List the servers of the fleet: gateways (connections, uptime, version) and Node servers.
    Status {
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// List sockets across the fleet (fetchSockets), Node servers' included.
    Sockets {
        /// Sockets in this room (repeatable: in any of them).
        #[arg(long = "room", value_name = "ROOM")]
        rooms: Vec<String>,
        /// Sockets of this user (repeatable), i.e. in the user's room.
        #[arg(long = "user", value_name = "ID")]
        users: Vec<String>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// List the rooms of the fleet (allRooms), socket ids included as in Node.
    Rooms {
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// List who is in a room with presence (users, sockets, since when), from Redis.
    Presence {
        /// The room, e.g. chat_123.
        room: String,
        #[command(flatten)]
        fleet: FleetArgs,
    },
}

/// Options of the fleet commands.
#[derive(Args, Debug)]
struct FleetArgs {
    /// Namespace to ask.
    #[arg(long, default_value = "/", value_name = "NSP")]
    namespace: String,
    /// Print JSON (one object) instead of a table.
    #[arg(long)]
    json: bool,
}

/// A failure with the exit code to use.
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: EXIT_USAGE,
        message: message.into(),
    }
}

fn read_source(path: &str) -> Result<String, Failure> {
    let mut text = String::new();
    if path == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| usage(format!("cannot read the data from stdin: {e}")))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read --data-file {path}: {e}")))?;
    }
    Ok(text)
}

fn parse_json(text: &str, what: &str) -> Result<Value, Failure> {
    switchboard_wire::json_str_to_msgpack(text.trim()).map_err(|e| {
        usage(format!(
            "{what} is not valid JSON ({e}). Quote strings: --data '\"text\"'"
        ))
    })
}

fn publish_failure(e: PublishError) -> Failure {
    match e {
        PublishError::Unreachable { .. } | PublishError::Timeout { .. } => Failure {
            code: EXIT_REDIS,
            message: format!(
                "{e}\nCheck that Redis is running and that --redis / SWITCHBOARD_REDIS_URL points to it."
            ),
        },
        PublishError::Auth { .. } => Failure {
            code: EXIT_REDIS,
            message: format!(
                "{e}\nCheck --username and SWITCHBOARD_REDIS__PASSWORD / --password-file (or the user and password in --redis)."
            ),
        },
        PublishError::Tls { .. } => Failure {
            code: EXIT_REDIS,
            message: format!(
                "{e}\nCheck --tls-ca-file (the CA that signed the server's certificate), --tls-cert-file / --tls-key-file \
                 if the server requires a client certificate, and that the host name is one the certificate names."
            ),
        },
        PublishError::Redis(_) => Failure {
            code: EXIT_REDIS,
            message: format!(
                "{e}\nCheck the credentials and that the ACL user may PUBLISH on this channel."
            ),
        },
        PublishError::Config(_) => usage(format!("{e}")),
        PublishError::ReservedEvent(_) => usage(format!(
            "{e}: Socket.IO clients reserve it. Pick another event name."
        )),
        PublishError::Encode(_) => usage(format!("{e}")),
    }
}

fn require_target(target: &Target, all: bool, verb: &str) -> Result<(), Failure> {
    if target.is_empty() && !all {
        return Err(usage(format!(
            "{verb} without --to/--user/--role would affect every socket of the namespace; \
             add a target or pass --all"
        )));
    }
    Ok(())
}

/// What a command did, for `main` to report.
enum Done {
    /// A message was published.
    Published(Delivery),
    /// A fleet command printed its answer; `complete` is false when some
    /// servers did not answer.
    Reported { complete: bool },
}

/// Runs a fleet command and prints its answer.
async fn run_fleet(
    redis: &switchboard_redis::RedisSettings,
    cli: &Cli,
    command: &Command,
) -> Result<Done, Failure> {
    let fleet_args = match command {
        Command::Status { fleet } | Command::Rooms { fleet } | Command::Sockets { fleet, .. } => {
            fleet
        }
        _ => unreachable!("run_fleet is called for fleet commands only"),
    };
    let redis = switchboard_redis::Redis::new(redis)
        .map_err(|e| usage(format!("invalid connection settings: {e}")))?;
    let timeout = Duration::from_millis(cli.timeout_ms.max(1));
    let fleet =
        Fleet::new(&redis, &cli.key, &fleet_args.namespace, timeout).map_err(publish_failure)?;
    let gathered = match command {
        Command::Status { .. } => {
            let status = fleet.status().await.map_err(publish_failure)?;
            cli_fleet::print_status(&status, fleet_args.json, cli.timeout_ms);
            status.gathered
        }
        Command::Sockets { rooms, users, .. } => {
            let template = switchboard_broadcaster::one_variable_template(
                "--user-room-template",
                &cli.user_room_template,
                "id",
            )
            .map_err(|e| usage(e.to_string()))?;
            let mut rooms = rooms.clone();
            rooms.extend(users.iter().filter_map(|u| template.fill("id", u)));
            let sockets = fleet.sockets(rooms).await.map_err(publish_failure)?;
            cli_fleet::print_sockets(&sockets, fleet_args.json, cli.timeout_ms);
            sockets.gathered
        }
        _ => {
            let rooms = fleet.rooms().await.map_err(publish_failure)?;
            cli_fleet::print_rooms(&rooms, fleet_args.json, cli.timeout_ms);
            rooms.gathered
        }
    };
    if gathered.missing() > 0 {
        eprintln!(
            "switchboard: warning: {} of {} server(s) on {} did not answer within {} ms",
            gathered.missing(),
            gathered.expected,
            switchboard_wire::Channels::new(cli.key.clone()).request(&fleet_args.namespace),
            cli.timeout_ms
        );
    }
    Ok(Done::Reported {
        complete: gathered.missing() == 0,
    })
}

async fn run(cli: Cli) -> Result<Done, Failure> {
    let redis = cli.connection.settings(&cli.redis, cli.timeout_ms)?;
    if matches!(
        cli.command,
        Command::Status { .. } | Command::Sockets { .. } | Command::Rooms { .. }
    ) {
        return run_fleet(&redis, &cli, &cli.command).await;
    }
    let b = Broadcaster::from_config(BroadcasterConfig {
        redis_url: cli.redis.clone(),
        redis,
        key: cli.key.clone(),
        publish_timeout: Duration::from_millis(cli.timeout_ms.max(1)),
        user_room_template: cli.user_room_template.clone(),
        role_room_template: cli.role_room_template.clone(),
        streams: (cli.bus == "streams").then(|| switchboard_broadcaster::StreamsOptions {
            stream_name: cli.stream_name.clone(),
            stream_count: cli.stream_count,
            channels: switchboard_wire::ClusterChannels::new(cli.key.clone()),
            max_len: cli.stream_max_len,
            ..Default::default()
        }),
        ..Default::default()
    })
    .map_err(publish_failure)?;
    let delivery = match cli.command {
        Command::Publish {
            target,
            event,
            data,
            data_file,
            args,
            volatile,
            sharded,
        } => {
            let sharded = sharded
                .map(|mode| match mode.as_str() {
                    "static" | "dynamic" => mode
                        .parse::<SubscriptionMode>()
                        .map_err(|e| usage(e.to_string())),
                    _ => Err(usage(
                        "--sharded takes \"static\" or \"dynamic\" (the fleet's subscription mode)",
                    )),
                })
                .transpose()?;
            let mut values = vec![Value::from(event.as_str())];
            if let Some(d) = data {
                let text = if d == "-" { read_source("-")? } else { d };
                values.push(parse_json(&text, "--data")?);
            } else if let Some(path) = data_file {
                let text = read_source(&path)?;
                values.push(parse_json(&text, "--data-file")?);
            } else if let Some(a) = args {
                match parse_json(&a, "--args")? {
                    Value::Array(items) => values.extend(items),
                    _ => {
                        return Err(usage(
                            "--args must be a JSON array of arguments, e.g. '[1,\"a\"]'; \
                             use --data for a single argument",
                        ));
                    }
                }
            }
            let mut op = target.apply(&b);
            if volatile {
                op = op.volatile();
            }
            match sharded {
                Some(mode) => {
                    let m = op
                        .encode_sharded_values(Value::Array(values), mode)
                        .map_err(publish_failure)?;
                    b.spublish(m).await.map_err(publish_failure)
                }
                None => {
                    let m = op
                        .encode_values(Value::Array(values))
                        .map_err(publish_failure)?;
                    b.publish(m).await.map_err(publish_failure)
                }
            }
        }
        Command::Status { .. } | Command::Sockets { .. } | Command::Rooms { .. } => {
            unreachable!("fleet commands return above")
        }
        Command::Presence { room, fleet } => {
            let members = b
                .presence_in(&fleet.namespace, &room)
                .await
                .map_err(publish_failure)?;
            cli_fleet::print_presence(&room, &members, fleet.json);
            return Ok(Done::Reported { complete: true });
        }
        Command::Kick { target, close, all } => {
            require_target(&target, all, "kick")?;
            target
                .apply(&b)
                .disconnect_sockets(close)
                .await
                .map_err(publish_failure)
        }
        Command::Join { target, rooms, all } => {
            require_target(&target, all, "join")?;
            target
                .apply(&b)
                .sockets_join(rooms)
                .await
                .map_err(publish_failure)
        }
        Command::Leave { target, rooms, all } => {
            require_target(&target, all, "leave")?;
            target
                .apply(&b)
                .sockets_leave(rooms)
                .await
                .map_err(publish_failure)
        }
    }?;
    Ok(Done::Published(delivery))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let require_delivery = cli.require_delivery;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Done::Reported { complete }) => {
            if complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_INCOMPLETE)
            }
        }
        Ok(Done::Published(d)) if d.stream_id.is_some() => {
            println!(
                "appended to {}: entry {}",
                d.channel,
                d.stream_id.unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(Done::Published(d)) => {
            println!(
                "published to {}: {} subscriber(s)",
                d.channel, d.subscribers
            );
            if d.subscribers == 0 {
                eprintln!(
                    "switchboard: warning: no gateway or server is subscribed to this namespace on \
                     this Redis (check --redis, --key and --namespace)"
                );
                if require_delivery {
                    return ExitCode::from(EXIT_UNDELIVERED);
                }
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("switchboard: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
