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

impl Changes {
    pub fn between(old: &Config, new: &Config) -> Self {
        let mut changes = Changes::default();
        let mut check = |key, changed: bool, reloadable: bool| {
            if changed {
                if reloadable {
                    changes.applied.push(key);
                } else {
                    changes.need_restart.push(key);
                }
            }
        };
        check("gateways", old.gateways != new.gateways, true);
        check("retrieval", old.retrieval != new.retrieval, true);
        check(
            "media.default_timeout",
            old.media.default_timeout != new.media.default_timeout,
            true,
        );
        check(
            "media.max_timeout",
            old.media.max_timeout != new.media.max_timeout,
            true,
        );
        check("denylist", old.denylist != new.denylist, true);
        check("log.level", old.log.level != new.log.level, true);

        check("server", old.server != new.server, false);
        check("homeserver", old.homeserver != new.homeserver, false);
        check("cache", old.cache != new.cache, false);
        // Every other [media] key, whatever keys it grows.
        let media_rest = |c: &Config| {
            let mut media = c.media.clone();
            media.default_timeout = Default::default();
            media.max_timeout = Default::default();
            media
        };
        check(
            "media (other than the timeouts)",
            media_rest(old) != media_rest(new),
            false,
        );
        check("auth", old.auth != new.auth, false);
        check("thumbnails", old.thumbnails != new.thumbnails, false);
        check("capabilities", old.capabilities != new.capabilities, false);
        check("admin", old.admin != new.admin, false);
        changes
    }

    /// `new` with what was not applied put back to its running value: the configuration in
    /// force after the reload, so the next reload reports a pending restart again.
    pub fn in_force(old: &Config, new: &Config) -> Config {
        let mut running = old.clone();
        running.gateways = new.gateways.clone();
        running.retrieval = new.retrieval.clone();
        running.media.default_timeout = new.media.default_timeout;
        running.media.max_timeout = new.media.max_timeout;
        running.denylist = new.denylist.clone();
        running.log = new.log.clone();
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
        // Still pending next time.
        assert_eq!(
            Changes::between(&running, &new).need_restart,
            changes.need_restart
        );
    }
}
