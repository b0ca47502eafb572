//! `[presence]`: who is online and who is in a room.

use serde::{Deserialize, Serialize};

use switchboard_wire::room_template::{self, RoomTemplate};

use crate::config::ConfigError;

/// Shortest accepted `presence.ttl_s`: entries are refreshed every third
/// of it, and a refresh needs a moment.
pub const MIN_TTL_S: u64 = 3;
/// Longest accepted `presence.ttl_s` (one day).
pub const MAX_TTL_S: u64 = 86_400;

/// `[presence]`. Per-room presence is switched on per `[[client.rooms]]`
/// rule (`presence = true`); per-user online state by `online_rooms` (or
/// `track_online`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// An entry not refreshed within this many seconds is gone: a gateway
    /// that died without a goodbye leaves its users' rooms, and they go
    /// offline, this long after its last refresh (plus one refresh period,
    /// `ttl_s / 3`). Default 60.
    pub ttl_s: u64,
    /// Rooms where a user's `presence:online` / `presence:offline` are
    /// announced, as templates over the user's claims
    /// (`company:{company_id}`). Setting any turns on online tracking.
    pub online_rooms: Vec<String>,
    /// Track who is online (for `GET /api/v1/online` and the broadcaster's
    /// `is_online`) even with no `online_rooms`. Default false: tracking
    /// costs Redis commands per connect and per refresh.
    pub track_online: bool,
    /// Claims shown with each member (`["name"]`): the claims a room's
    /// members may see of each other. Nothing else of the token is stored.
    pub claims: Vec<String>,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            ttl_s: 60,
            online_rooms: Vec::new(),
            track_online: false,
            claims: Vec::new(),
        }
    }
}

impl PresenceConfig {
    /// Whether per-user online state is tracked.
    pub fn tracks_online(&self) -> bool {
        self.track_online || !self.online_rooms.is_empty()
    }

    /// The parsed `online_rooms` templates (errors name the key).
    /// (`{claim}` only: not `{role}`, which names several rooms, nor
    /// `{arg}`, which only client events have).
    pub fn online_templates(&self) -> Result<Vec<RoomTemplate>, ConfigError> {
        self.online_rooms
            .iter()
            .map(|t| {
                let bad = |message: String| ConfigError::Invalid {
                    key: "presence.online_rooms",
                    message,
                };
                let template = RoomTemplate::parse(t).map_err(|e| bad(e.to_string()))?;
                for var in [room_template::ROLE, room_template::ARG] {
                    if template.uses(var) {
                        return Err(bad(format!(
                            "template {t:?}: {{{var}}} is not supported here"
                        )));
                    }
                }
                Ok(template)
            })
            .collect()
    }

    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_TTL_S..=MAX_TTL_S).contains(&self.ttl_s) {
            return Err(ConfigError::Invalid {
                key: "presence.ttl_s",
                message: format!(
                    "must be between {MIN_TTL_S} and {MAX_TTL_S} (got {})",
                    self.ttl_s
                ),
            });
        }
        self.online_templates()?;
        if let Some(bad) = self
            .claims
            .iter()
            .find(|c| c.trim().is_empty() || c.contains('.'))
        {
            return Err(ConfigError::Invalid {
                key: "presence.claims",
                message: format!("{bad:?}: list top-level claim names"),
            });
        }
        Ok(())
    }

    /// How often entries are refreshed (a third of the TTL).
    pub fn refresh_period(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ttl_s * 1000 / 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let key = |c: PresenceConfig| match c.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an error, got {other:?}"),
        };
        assert_eq!(
            key(PresenceConfig {
                ttl_s: 1,
                ..Default::default()
            }),
            "presence.ttl_s"
        );
        assert_eq!(
            key(PresenceConfig {
                online_rooms: vec!["company:{company_id".into()],
                ..Default::default()
            }),
            "presence.online_rooms"
        );
        assert_eq!(
            key(PresenceConfig {
                online_rooms: vec!["team:{role}".into()],
                ..Default::default()
            }),
            "presence.online_rooms"
        );
        assert_eq!(
            key(PresenceConfig {
                online_rooms: vec!["chat_{arg}".into()],
                ..Default::default()
            }),
            "presence.online_rooms"
        );
        assert_eq!(
            key(PresenceConfig {
                claims: vec!["".into()],
                ..Default::default()
            }),
            "presence.claims"
        );
        assert!(PresenceConfig::default().validate().is_ok());
        // Through the whole config, from the environment.
        let env = |k: &str, v: &str| {
            crate::config::Config::load_from(
                None,
                [
                    ("SWITCHBOARD_JWT_SECRET".to_string(), "x".repeat(40)),
                    (k.to_string(), v.to_string()),
                ],
            )
        };
        let err = env("SWITCHBOARD_PRESENCE__TTL_S", "1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`presence.ttl_s`"), "{err}");
        let ok = env(
            "SWITCHBOARD_PRESENCE__ONLINE_ROOMS",
            "company:{company_id}, team:{team}",
        )
        .expect("valid");
        assert_eq!(ok.presence.online_rooms.len(), 2);
        assert!(ok.presence.tracks_online());
        assert!(!PresenceConfig::default().tracks_online());
    }
}
