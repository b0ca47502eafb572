//! Where presence lives: Redis (shared by the fleet, TTL'ed entries, the
//! layout of `switchboard_wire::presence`) or memory (the embedded mode:
//! this gateway is the fleet, so nothing expires).
//!
//! Every write is one Lua script on one scope's keys (one Cluster slot),
//! sent with `EVALSHA` (falling back to `EVAL` once after a Redis restart
//! forgot the script). Calls issued together share the bus' multiplexed
//! connection, so a flush of many scopes goes out as one pipeline.
//!
//! Gateway leases: `<key>-presence#gateways` (ZSET gateway uid -> lease
//! expiry, Unix ms) and `<key>-presence#gw#{<uid>}` (SET of the scopes the
//! gateway has entries in). A gateway writes its lease before the entries
//! of each refresh and never writes an entry that outlives its lease, so
//! once a lease has expired every entry of that gateway has expired too.
//! A reaper that finds an expired lease claims it by pushing it forward one
//! TTL (a script: only one reaper wins), reaps each scope in the set (the
//! `REAP` script: whoever's `ZREM` returns 1 announces), removes the scope
//! from the set after its reap, and deletes the lease at the end. A reaper
//! that dies half-way leaves the lease to expire again, and the next one
//! continues with the scopes left in the set.

use std::{collections::HashMap, time::Instant};

use parking_lot::Mutex;
use switchboard_wire::presence::{self as layout, Info, Member};

use crate::{
    bus::{BusError, StoreLink},
    metrics::Metrics,
};

/// A script and its SHA1.
struct Script {
    code: &'static str,
    sha: String,
}

impl Script {
    fn new(code: &'static str) -> Script {
        Script {
            code,
            sha: redis::Script::new(code).get_hash().to_string(),
        }
    }
}

/// Claims an expired lease: `KEYS[1]` the gateways ZSET; `ARGV`: gateway,
/// now, new lease expiry. 1 for the one caller that claimed it.
const CLAIM_LEASE: &str = r#"
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at and tonumber(at) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"#;

/// The Redis side of the store.
pub(crate) struct RedisStore {
    link: StoreLink,
    key: String,
    upsert: Script,
    refresh: Script,
    remove: Script,
    reap: Script,
    members: Script,
    claim: Script,
}

/// Scopes reaped per dead gateway per round.
const REAP_BATCH: usize = 200;
/// Most entries one query returns.
pub(crate) const MAX_MEMBERS: usize = 10_000;

/// One member this gateway holds in a scope, as written.
pub(crate) struct Write<'a> {
    /// The member (user id).
    pub member: &'a str,
    /// Sockets of it here.
    pub sockets: u32,
    /// Its info (written when it joins the fleet).
    pub info: &'a Info,
}

/// A member that left the fleet (no gateway holds it any more).
pub(crate) type Left = (String, Info);

/// One scope in memory: member -> (sockets, info).
pub(crate) type MemoryScope = HashMap<String, (u32, Info)>;

/// Presence storage; see the module documentation.
pub(crate) enum Store {
    /// The embedded mode: scope -> member -> (sockets, info).
    Memory(Mutex<HashMap<String, MemoryScope>>),
    /// Redis, shared by the fleet.
    Redis(Box<RedisStore>),
}

impl Store {
    /// The store on the bus' Redis connection, or in memory when the bus
    /// is the embedded one.
    pub(crate) fn new(link: Option<StoreLink>, key: &str) -> Store {
        let Some(link) = link else {
            return Store::Memory(Mutex::new(HashMap::new()));
        };
        Store::Redis(Box::new(RedisStore {
            link,
            key: key.to_string(),
            upsert: Script::new(layout::UPSERT),
            refresh: Script::new(layout::REFRESH),
            remove: Script::new(layout::REMOVE),
            reap: Script::new(layout::REAP),
            members: Script::new(layout::MEMBERS),
            claim: Script::new(CLAIM_LEASE),
        }))
    }

    /// Adds or refreshes this gateway's members of `scope` (entries valid
    /// until `expiry`, Unix ms); returns those new to the fleet.
    pub(crate) async fn upsert(
        &self,
        metrics: &Metrics,
        scope: &str,
        gateway: &str,
        expiry: u64,
        writes: &[Write<'_>],
    ) -> Result<Vec<String>, BusError> {
        match self {
            Store::Memory(scopes) => {
                let mut scopes = scopes.lock();
                let members = scopes.entry(scope.to_string()).or_default();
                let mut joined = Vec::new();
                for w in writes {
                    let prev = members.insert(w.member.to_string(), (w.sockets, w.info.clone()));
                    match prev {
                        Some((_, info)) => {
                            // The first joiner's info stays, as in Redis.
                            if let Some(entry) = members.get_mut(w.member) {
                                entry.1 = info;
                            }
                        }
                        None => joined.push(w.member.to_string()),
                    }
                }
                Ok(joined)
            }
            Store::Redis(r) => {
                let mut args: Vec<String> = vec![expiry.to_string(), gateway.to_string()];
                for w in writes {
                    args.push(w.member.to_string());
                    args.push(w.sockets.to_string());
                    args.push(serde_json::to_string(w.info).unwrap_or_default());
                }
                let keys = layout::scope_keys(&r.key, scope);
                let joined: Vec<String> = r.run(metrics, &r.upsert, &keys, &args).await?;
                Ok(joined)
            }
        }
    }

    /// Pushes the expiry of this gateway's `members` of `scope` to
    /// `expiry`; returns those whose entry is gone (to be written again).
    pub(crate) async fn refresh(
        &self,
        metrics: &Metrics,
        scope: &str,
        gateway: &str,
        expiry: u64,
        members: &[&str],
    ) -> Result<Vec<String>, BusError> {
        match self {
            Store::Memory(_) => Ok(Vec::new()),
            Store::Redis(r) => {
                let mut args = vec![expiry.to_string(), gateway.to_string()];
                args.extend(members.iter().map(|m| m.to_string()));
                let [x, ..] = layout::scope_keys(&r.key, scope);
                r.run(metrics, &r.refresh, &[x], &args).await
            }
        }
    }

    /// Removes this gateway's `members` of `scope`; returns those that left
    /// the fleet.
    pub(crate) async fn remove(
        &self,
        metrics: &Metrics,
        scope: &str,
        gateway: &str,
        members: &[&str],
    ) -> Result<Vec<Left>, BusError> {
        match self {
            Store::Memory(scopes) => {
                let mut scopes = scopes.lock();
                let mut left = Vec::new();
                if let Some(held) = scopes.get_mut(scope) {
                    for m in members {
                        if let Some((_, info)) = held.remove(*m) {
                            left.push((m.to_string(), info));
                        }
                    }
                    if held.is_empty() {
                        scopes.remove(scope);
                    }
                }
                Ok(left)
            }
            Store::Redis(r) => {
                let mut args = vec![gateway.to_string()];
                args.extend(members.iter().map(|m| m.to_string()));
                let keys = layout::scope_keys(&r.key, scope);
                let flat: Vec<Vec<u8>> = r.run(metrics, &r.remove, &keys, &args).await?;
                Ok(pairs(&flat))
            }
        }
    }

    /// The live members of `scope`, across the fleet.
    pub(crate) async fn members(
        &self,
        metrics: &Metrics,
        scope: &str,
    ) -> Result<Vec<Member>, BusError> {
        match self {
            Store::Memory(scopes) => {
                let scopes = scopes.lock();
                let mut out: Vec<Member> = scopes
                    .get(scope)
                    .map(|held| {
                        held.iter()
                            .map(|(user, (sockets, info))| Member {
                                user: user.clone(),
                                sockets: u64::from(*sockets),
                                joined_at: info.joined_at,
                                claims: info.claims.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.sort_by(|a, b| a.user.cmp(&b.user));
                Ok(out)
            }
            Store::Redis(r) => {
                let keys = layout::scope_keys(&r.key, scope);
                let args = [super::now_ms().to_string(), MAX_MEMBERS.to_string()];
                let flat: Vec<Vec<u8>> = r.run(metrics, &r.members, &keys, &args).await?;
                Ok(layout::merge_members(&flat))
            }
        }
    }

    /// Writes this gateway's lease (before the entries of a refresh);
    /// true when the lease was missing (a reaper took this gateway for
    /// dead: every scope must be registered again).
    pub(crate) async fn lease(&self, gateway: &str, expiry: u64) -> Result<bool, BusError> {
        match self {
            Store::Memory(_) => Ok(false),
            Store::Redis(r) => {
                let added: i64 = r
                    .link
                    .query(
                        &redis::cmd("ZADD")
                            .arg(r.gateways_key())
                            .arg(expiry)
                            .arg(gateway)
                            .clone(),
                    )
                    .await?;
                Ok(added == 1)
            }
        }
    }

    /// Records that this gateway has (`held`) or no longer has entries in
    /// `scopes`, for reapers.
    pub(crate) async fn register(
        &self,
        gateway: &str,
        scopes: &[&str],
        held: bool,
    ) -> Result<(), BusError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(_) if scopes.is_empty() => Ok(()),
            Store::Redis(r) => {
                let cmd = if held { "SADD" } else { "SREM" };
                r.link
                    .query::<i64>(
                        &redis::cmd(cmd)
                            .arg(r.scopes_key(gateway))
                            .arg(scopes)
                            .clone(),
                    )
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Removes this gateway's lease and scope set (a clean shutdown, after
    /// every entry was removed).
    pub(crate) async fn retire(&self, gateway: &str) -> Result<(), BusError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => {
                r.link
                    .query::<i64>(&redis::cmd("DEL").arg(r.scopes_key(gateway)).clone())
                    .await?;
                r.drop_lease(gateway).await
            }
        }
    }

    /// One reaper round: finds gateways whose lease expired, claims them
    /// one at a time and reaps their scopes; returns `(scope, left)` for
    /// every member that left the fleet (to announce).
    pub(crate) async fn reap(
        &self,
        metrics: &Metrics,
        me: &str,
        ttl_ms: u64,
    ) -> Result<Vec<(String, Vec<Left>)>, BusError> {
        let Store::Redis(r) = self else {
            return Ok(Vec::new());
        };
        let now = super::now_ms();
        let dead: Vec<String> = r
            .link
            .query(
                &redis::cmd("ZRANGEBYSCORE")
                    .arg(r.gateways_key())
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(10)
                    .clone(),
            )
            .await?;
        let mut out = Vec::new();
        for gateway in dead.iter().filter(|g| g.as_str() != me) {
            let claimed: i64 = r
                .run(
                    metrics,
                    &r.claim,
                    &[r.gateways_key()],
                    &[
                        gateway.clone(),
                        now.to_string(),
                        now.saturating_add(ttl_ms).to_string(),
                    ],
                )
                .await?;
            if claimed != 1 {
                continue;
            }
            tracing::info!(gateway = %gateway, "presence: a gateway's lease expired; removing its entries");
            let set = r.scopes_key(gateway);
            loop {
                let scopes: Vec<String> = r
                    .link
                    .query(&redis::cmd("SRANDMEMBER").arg(&set).arg(REAP_BATCH).clone())
                    .await?;
                if scopes.is_empty() {
                    break;
                }
                for scope in &scopes {
                    let keys = layout::scope_keys(&r.key, scope);
                    let args = [now.to_string(), MAX_MEMBERS.to_string()];
                    // Until no expired entry is left (the script removes at
                    // most MAX_MEMBERS per call).
                    loop {
                        let flat: Vec<Vec<u8>> = r.run(metrics, &r.reap, &keys, &args).await?;
                        let left = pairs(flat.get(1..).unwrap_or_default());
                        if !left.is_empty() {
                            out.push((scope.clone(), left));
                        }
                        let earliest = flat
                            .first()
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|v| v.parse::<f64>().ok());
                        if earliest.is_none_or(|at| at > now as f64) {
                            break;
                        }
                    }
                }
                r.link
                    .query::<i64>(&redis::cmd("SREM").arg(&set).arg(&scopes).clone())
                    .await?;
            }
            r.drop_lease(gateway).await?;
        }
        Ok(out)
    }
}

impl RedisStore {
    fn gateways_key(&self) -> String {
        format!("{}-presence#gateways", self.key)
    }

    /// Removes `gateway`'s lease (it retired, or a reaper emptied it).
    async fn drop_lease(&self, gateway: &str) -> Result<(), BusError> {
        let cmd = redis::cmd("ZREM")
            .arg(self.gateways_key())
            .arg(gateway)
            .clone();
        self.link.query::<i64>(&cmd).await.map(|_| ())
    }

    fn scopes_key(&self, gateway: &str) -> String {
        format!("{}-presence#gw#{{{gateway}}}", self.key)
    }

    /// Runs a script by its SHA1, loading it with `EVAL` if Redis does not
    /// know it (first use, or after a restart); timed in
    /// `switchboard_presence_redis_seconds`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        metrics: &Metrics,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, BusError> {
        let started = Instant::now();
        let call = |verb: &str, body: &str| {
            redis::cmd(verb)
                .arg(body)
                .arg(keys.len())
                .arg(keys)
                .arg(args)
                .clone()
        };
        let result = match self.link.query(&call("EVALSHA", &script.sha)).await {
            Err(BusError::Command(e)) if e.to_ascii_lowercase().contains("noscript") => {
                self.link.query(&call("EVAL", script.code)).await
            }
            other => other,
        };
        metrics
            .presence_redis_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

/// `member, info` pairs from a script's flat answer.
fn pairs(flat: &[Vec<u8>]) -> Vec<Left> {
    flat.chunks_exact(2)
        .map(|p| {
            (
                String::from_utf8_lossy(&p[0]).into_owned(),
                Info::parse(&p[1]),
            )
        })
        .collect()
}
