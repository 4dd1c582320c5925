//! What a configuration reload (SIGHUP) may change while connections stay up, and what needs a
//! restart.
//!
//! Reloaded: the gateways and retrieval settings, the media wait times, the denylist and the
//! log level. Everything else (listeners, homeserver, cache size, auth, thumbnails, ...) is
//! built into long-lived parts at start; a change there is reported and the running value
//! stays until a restart.

use crate::config::Config;

/// The keys a new configuration changes, split by whether a reload applies them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub applied: Vec<&'static str>,
    pub need_restart: Vec<&'static str>,
}

/// Every key a reload looks at, in the order changes are reported: its name, whether the
/// running process can take a new value, and how to carry that value over. The one list both
/// functions below read, so what is reported as applied is exactly what is put in force.
struct Key {
    name: &'static str,
    differs: fn(&Config, &Config) -> bool,
    /// `Some` for a reloadable key: copies the new value into the running configuration.
    apply: Option<fn(&mut Config, &Config)>,
}

/// `[media]` without the keys that reload (so a key it grows later needs a restart).
fn media_rest(c: &Config) -> crate::config::MediaConfig {
    let mut media = c.media.clone();
    media.default_timeout = Default::default();
    media.max_timeout = Default::default();
    media
}

/// A key a reload puts in force: compared, and copied into the running configuration.
macro_rules! reloadable {
    ($name:literal, $($field:ident).+) => {
        Key {
            name: $name,
            differs: |a, b| a.$($field).+ != b.$($field).+,
            apply: Some(|run, new| run.$($field).+ = Clone::clone(&new.$($field).+)),
        }
    };
}

/// A section a reload only reports: it is built into long-lived parts at start.
macro_rules! needs_restart {
    ($name:literal, $field:ident) => {
        Key {
            name: $name,
            differs: |a, b| a.$field != b.$field,
            apply: None,
        }
    };
}

const KEYS: &[Key] = &[
    reloadable!("gateways", gateways),
    reloadable!("retrieval", retrieval),
    reloadable!("media.default_timeout", media.default_timeout),
    reloadable!("media.max_timeout", media.max_timeout),
    reloadable!("denylist", denylist),
    reloadable!("log.level", log.level),
    needs_restart!("server", server),
    needs_restart!("homeserver", homeserver),
    needs_restart!("cache", cache),
    Key {
        name: "media (other than the timeouts)",
        differs: |a, b| media_rest(a) != media_rest(b),
        apply: None,
    },
    needs_restart!("auth", auth),
    needs_restart!("thumbnails", thumbnails),
    needs_restart!("capabilities", capabilities),
    needs_restart!("admin", admin),
    needs_restart!("upload", upload),
];

impl Changes {
    pub fn between(old: &Config, new: &Config) -> Self {
        let mut changes = Changes::default();
        for key in KEYS.iter().filter(|key| (key.differs)(old, new)) {
            match key.apply {
                Some(_) => changes.applied.push(key.name),
                None => changes.need_restart.push(key.name),
            }
        }
        changes
    }

    /// `new` with what was not applied put back to its running value: the configuration in
    /// force after the reload, so the next reload reports a pending restart again.
    pub fn in_force(old: &Config, new: &Config) -> Config {
        let mut running = old.clone();
        for apply in KEYS.iter().filter_map(|key| key.apply) {
            apply(&mut running, new);
        }
        running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::tests::MINIMAL as BASE;

    #[test]
    fn sorts_changes_by_whether_they_reload() {
        let old = Config::from_toml(BASE).unwrap();
        assert_eq!(Changes::between(&old, &old), Changes::default());
        let new = Config::from_toml(&format!(
            "{}\n[[gateways]]\nurl = \"https://gw.example\"\n[cache]\nmax_bytes = \"1GiB\"\n\
             [media]\ndefault_timeout = \"5s\"\nrange_fetch_threshold = \"1MiB\"\n\
             [log]\nlevel = \"debug\"\n",
            BASE.replace("8009", "8010")
        ))
        .unwrap();
        let changes = Changes::between(&old, &new);
        assert_eq!(
            changes.applied,
            ["gateways", "media.default_timeout", "log.level"]
        );
        assert_eq!(
            changes.need_restart,
            ["server", "cache", "media (other than the timeouts)"]
        );
        let running = Changes::in_force(&old, &new);
        assert_eq!(running.gateways.len(), 2);
        assert_eq!(running.server, old.server);
        assert_eq!(running.cache, old.cache);
        // Everything reloadable is now in force; what needs a restart is still pending.
        assert!(Changes::between(&running, &new).applied.is_empty());
        assert_eq!(
            Changes::between(&running, &new).need_restart,
            changes.need_restart
        );
    }
}
