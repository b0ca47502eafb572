//! Presence in Redis: the key layout and the Lua scripts shared by the
//! gateway (which writes) and the broadcaster (which reads).
//!
//! A *scope* is what presence is kept for: a room (`r:<nsp>:<room>`, whose
//! members are users) or a user (`u:<user>`, whose one member is the user:
//! online or not). Each gateway writes one *entry* per (scope, member) it
//! holds sockets for, named `<gateway uid>|<member>`. Per scope, four keys
//! share one Cluster hash tag (`{<scope>}`), so every script touches one
//! slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<key>-presence#{<scope>}#x` | ZSET | entry -> expiry (Unix ms): the expiry index |
//! | `<key>-presence#{<scope>}#s` | HASH | entry -> sockets of the member on that gateway |
//! | `<key>-presence#{<scope>}#n` | HASH | member -> gateways holding it (the per-user counter) |
//! | `<key>-presence#{<scope>}#i` | HASH | member -> JSON info (`joined_at`, public claims, where to announce) |
//!
//! Finding expired entries never needs `KEYS` or `SCAN`: each gateway
//! also keeps a lease and the set of scopes it wrote to (see the gateway's
//! `presence/store.rs`), so the scopes of a gateway that died are known.
//!
//! Exactly-once announcements follow from Redis' atomic scripts: an entry
//! enters the expiry index in one `ZADD` that returns 1 to exactly one
//! caller and leaves it in one `ZREM` that returns 1 to exactly one caller
//! (the gateway itself on a clean leave, or whichever gateway's reaper got
//! there first after a crash); only that caller moves the member's counter,
//! and only the caller that moves it 0 -> 1 (join) or 1 -> 0 (leave)
//! announces.

/// The scope of a room's presence: `r:<nsp>:<room>`.
pub fn room_scope(nsp: &str, room: &str) -> String {
    format!("r:{nsp}:{room}")
}

/// The scope of a user's online state: `u:<user>`.
pub fn user_scope(user: &str) -> String {
    format!("u:{user}")
}

/// The four keys of a scope, in the order the scripts take them
/// (`x`, `s`, `n`, `i`).
pub fn scope_keys(key: &str, scope: &str) -> [String; 4] {
    let base = format!("{key}-presence#{{{scope}}}#");
    [
        format!("{base}x"),
        format!("{base}s"),
        format!("{base}n"),
        format!("{base}i"),
    ]
}

/// The entry of `member` written by gateway `gateway`.
pub fn entry(gateway: &str, member: &str) -> String {
    format!("{gateway}|{member}")
}

/// Removes entry `e` of member `m`; appends `m` and its info to `left`
/// when it was the member's last entry. Shared by the remove and reap
/// scripts.
macro_rules! drop_entry_fn {
    () => {
        r#"
local x, s, n, i = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local function drop_entry(e, m, left)
  if redis.call('ZREM', x, e) == 1 then
    redis.call('HDEL', s, e)
    if redis.call('HINCRBY', n, m, -1) <= 0 then
      redis.call('HDEL', n, m)
      left[#left + 1] = m
      left[#left + 1] = redis.call('HGET', i, m) or ''
      redis.call('HDEL', i, m)
    end
  end
end
"#
    };
}

/// Adds or refreshes this gateway's entries of a scope.
///
/// `KEYS`: the scope's keys. `ARGV`: expiry (Unix ms), gateway uid, then
/// per member: member, sockets here, info JSON. Returns the members that
/// were in no gateway's entry before (announce a join for each).
pub const UPSERT: &str = r#"
local x, s, n, i = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local exp, gw = ARGV[1], ARGV[2]
local joined = {}
for k = 3, #ARGV, 3 do
  local m = ARGV[k]
  local e = gw .. '|' .. m
  if redis.call('ZADD', x, exp, e) == 1 then
    if redis.call('HINCRBY', n, m, 1) == 1 then
      redis.call('HSET', i, m, ARGV[k + 2])
      joined[#joined + 1] = m
    end
  end
  redis.call('HSET', s, e, ARGV[k + 1])
end
return joined
"#;

/// Pushes the expiry of this gateway's entries of a scope forward (the
/// periodic refresh: no info, no socket counts, one key).
///
/// `KEYS`: the scope's `x` key. `ARGV`: expiry (Unix ms), gateway uid,
/// then members. Returns the members whose entry is gone (reaped while
/// this gateway was unreachable): the gateway writes them again with
/// [`UPSERT`], which announces them.
pub const REFRESH: &str = r#"
local gone = {}
for k = 3, #ARGV do
  local e = ARGV[2] .. '|' .. ARGV[k]
  if redis.call('ZSCORE', KEYS[1], e) then
    redis.call('ZADD', KEYS[1], ARGV[1], e)
  else
    gone[#gone + 1] = ARGV[k]
  end
end
return gone
"#;

/// Removes this gateway's entries of a scope.
///
/// `KEYS`: the scope's keys. `ARGV`: gateway uid, then members. Returns
/// `member, info` pairs of the members no gateway holds any more
/// (announce a leave for each).
pub const REMOVE: &str = concat!(
    drop_entry_fn!(),
    r#"
local left = {}
for k = 2, #ARGV do
  drop_entry(ARGV[1] .. '|' .. ARGV[k], ARGV[k], left)
end
return left
"#
);

/// Removes a scope's expired entries, whoever wrote them.
///
/// `KEYS`: the scope's keys. `ARGV`: now (Unix ms), most entries to
/// remove. Returns the earliest remaining expiry (`""` when the scope is
/// empty) followed by `member, info` pairs as [`REMOVE`] does.
pub const REAP: &str = concat!(
    drop_entry_fn!(),
    r#"
local left = {}
local due = redis.call('ZRANGEBYSCORE', x, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, e in ipairs(due) do
  local at = string.find(e, '|', 1, true)
  if at then
    drop_entry(e, string.sub(e, at + 1), left)
  else
    redis.call('ZREM', x, e)
  end
end
local first = redis.call('ZRANGE', x, 0, 0, 'WITHSCORES')
local out = { first[2] or '' }
for _, v in ipairs(left) do out[#out + 1] = v end
return out
"#
);

/// Reads a scope's live entries.
///
/// `KEYS`: the scope's keys. `ARGV`: now (Unix ms), most entries. Returns
/// `member, sockets, info` triples, one per live entry (a member held by
/// two gateways appears twice; [`merge_members`] adds them up).
pub const MEMBERS: &str = r#"
local live = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, e in ipairs(live) do
  local at = string.find(e, '|', 1, true)
  if at then
    local m = string.sub(e, at + 1)
    out[#out + 1] = m
    out[#out + 1] = redis.call('HGET', KEYS[2], e) or '0'
    out[#out + 1] = redis.call('HGET', KEYS[4], m) or ''
  end
end
return out
"#;

/// One member of a scope, as the queries report it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The user id.
    pub user: String,
    /// Sockets of the user in the scope, over every gateway.
    pub sockets: u64,
    /// When the user's first socket joined (Unix ms).
    pub joined_at: u64,
    /// The public claims the gateway config lists (`presence.claims`).
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// What a gateway stores per member in the `#i` hash.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Info {
    /// When the member joined (Unix ms).
    #[serde(default)]
    pub joined_at: u64,
    /// Public claims.
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Rooms where the member's leave (offline) is announced; kept here so
    /// that a gateway reaping a dead peer's entries knows them without the
    /// user's token.
    #[serde(default)]
    pub announce: Vec<String>,
}

impl Info {
    /// Parses a stored info; junk or `""` gives the default.
    pub fn parse(text: &[u8]) -> Info {
        serde_json::from_slice(text).unwrap_or_default()
    }
}

/// Turns [`MEMBERS`] output (flattened triples) into members, adding up
/// the sockets of a user held by several gateways; sorted by user.
pub fn merge_members(triples: &[Vec<u8>]) -> Vec<Member> {
    let mut by_user: std::collections::BTreeMap<String, Member> = Default::default();
    for t in triples.chunks_exact(3) {
        let user = String::from_utf8_lossy(&t[0]).into_owned();
        let sockets = std::str::from_utf8(&t[1])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let info = Info::parse(&t[2]);
        let m = by_user.entry(user.clone()).or_insert_with(|| Member {
            user,
            sockets: 0,
            joined_at: info.joined_at,
            claims: info.claims.clone(),
        });
        m.sockets += sockets;
        if info.joined_at != 0 && (m.joined_at == 0 || info.joined_at < m.joined_at) {
            m.joined_at = info.joined_at;
        }
    }
    by_user.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_scope_share_one_hash_tag() {
        let keys = scope_keys("socket.io", &room_scope("/", "chat_1"));
        assert_eq!(keys[0], "socket.io-presence#{r:/:chat_1}#x");
        for k in &keys {
            assert!(k.starts_with("socket.io-presence#{r:/:chat_1}#"));
        }
    }

    #[test]
    fn members_of_two_gateways_are_added_up() {
        let info = br#"{"joined_at":5,"claims":{"name":"Ann"}}"#.to_vec();
        let later = br#"{"joined_at":9}"#.to_vec();
        let triples = vec![
            b"42".to_vec(),
            b"2".to_vec(),
            later,
            b"42".to_vec(),
            b"1".to_vec(),
            info,
            b"7".to_vec(),
            b"junk".to_vec(),
            b"".to_vec(),
        ];
        let members = merge_members(&triples);
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].user, "42");
        assert_eq!(members[0].sockets, 3);
        assert_eq!(members[0].joined_at, 5);
        assert_eq!(members[1].sockets, 0);
    }
}
