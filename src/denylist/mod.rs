//! Moderation: the CID denylist in force, and keeping it current.
//!
//! The lists are read into one `Denylist` that is swapped in whole (arc-swap), so a lookup
//! never sees half a reload and never takes a lock. A reload that fails on any file keeps the
//! previous lists entirely and says why in the log.

mod rules;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use cid::Cid;

use crate::metrics::{Outcome, METRICS};
pub use rules::{Denylist, ParseError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
}

/// The lists in force and the files they come from.
pub struct Denylists {
    current: ArcSwap<Denylist>,
    files: Mutex<Files>,
}

struct Files {
    paths: Vec<PathBuf>,
    /// How often the watcher looks (zero: it does not).
    interval: Duration,
    /// What each file looked like when last read, to notice changes without reading it.
    stamps: Vec<Option<Stamp>>,
}

/// Enough of a file's metadata to see it changed: an edit changes the length or the mtime, a
/// replacement by rename (editors, `mv`, Kubernetes ConfigMap symlink flips) the inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Denylists {
    /// Reads `paths`; an error here stops the start (an admin who configured a list wants it
    /// in force, not a proxy that serves what it should refuse).
    pub fn load(paths: &[PathBuf], interval: Duration) -> Result<Self, LoadError> {
        let (list, stamps) = read_all(paths)?;
        report(&list);
        Ok(Self {
            current: ArcSwap::from_pointee(list),
            files: Mutex::new(Files {
                paths: paths.to_vec(),
                interval,
                stamps,
            }),
        })
    }

    /// Whether `cid` is refused; counted when it is.
    pub fn blocks(&self, cid: &Cid) -> bool {
        let blocked = self.current.load().blocks(cid);
        if blocked {
            METRICS.denylist_refusals.inc();
        }
        blocked
    }

    pub fn current(&self) -> Arc<Denylist> {
        self.current.load_full()
    }

    /// Reads the lists again (SIGHUP, or `paths` changed by a configuration reload). On error
    /// the previous lists stay in force.
    pub fn reload(
        &self,
        paths: &[PathBuf],
        interval: Duration,
    ) -> Result<Arc<Denylist>, LoadError> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let result = read_all(paths);
        files.interval = interval;
        // Remember what was read even when it failed, so a broken file is reported once per
        // change rather than at every look.
        files.paths = paths.to_vec();
        files.stamps = paths.iter().map(|p| stamp(p)).collect();
        match result {
            Ok((list, _)) => {
                report(&list);
                let list = Arc::new(list);
                self.current.store(Arc::clone(&list));
                METRICS
                    .denylist_reloads
                    .get_or_create(&Outcome { outcome: "ok" })
                    .inc();
                Ok(list)
            }
            Err(error) => {
                METRICS
                    .denylist_reloads
                    .get_or_create(&Outcome { outcome: "error" })
                    .inc();
                Err(error)
            }
        }
    }

    /// Reads the lists again if a file changed since it was last read.
    pub fn reload_if_changed(&self) -> Option<Result<Arc<Denylist>, LoadError>> {
        let (paths, interval) = {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            let now: Vec<_> = files.paths.iter().map(|p| stamp(p)).collect();
            if now == files.stamps {
                return None;
            }
            (files.paths.clone(), files.interval)
        };
        Some(self.reload(&paths, interval))
    }

    fn interval(&self) -> Duration {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .interval
    }

    /// Looks at the files every `denylist.watch_interval` (zero: not at all, until a reload
    /// sets one) and reloads on a change; `applied` runs after each successful reload (the app
    /// drops newly blocked items from its cache).
    ///
    /// Polling file metadata rather than inotify: it sees renames over the file and symlink
    /// flips (ConfigMaps) that a watch on the old inode misses, and costs one `stat` per file
    /// per interval.
    pub fn spawn_watch(
        self: &Arc<Self>,
        applied: impl Fn(&Denylist) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let lists = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let interval = match lists.upgrade() {
                    Some(lists) => lists.interval(),
                    None => break,
                };
                tokio::time::sleep(if interval.is_zero() {
                    Duration::from_secs(5)
                } else {
                    interval
                })
                .await;
                let Some(lists) = lists.upgrade() else { break };
                if interval.is_zero() {
                    continue;
                }
                match lists.reload_if_changed() {
                    None => {}
                    Some(Ok(list)) => {
                        tracing::info!(rules = list.len(), "denylist file changed: reloaded");
                        applied(&list);
                    }
                    Some(Err(error)) => {
                        tracing::error!(%error, "denylist file changed but cannot be used: keeping the previous lists");
                    }
                }
            }
        })
    }
}

fn read_all(paths: &[PathBuf]) -> Result<(Denylist, Vec<Option<Stamp>>), LoadError> {
    let mut list = Denylist::default();
    let mut stamps = Vec::with_capacity(paths.len());
    for path in paths {
        stamps.push(stamp(path));
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        list.add_file(&text).map_err(|source| LoadError::Parse {
            path: path.clone(),
            source,
        })?;
    }
    Ok((list, stamps))
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

fn report(list: &Denylist) {
    METRICS.denylist_rules.set(list.len() as i64);
    if list.not_applicable() > 0 {
        tracing::info!(
            rules = list.len(),
            not_applicable = list.not_applicable(),
            "denylist rules for paths inside a CID or for IPNS names never match whole-CID media"
        );
    }
}
