//! The workspace listing: one engine round trip, shared by concurrent callers, at most
//! `LIST_FRESH` old (pages may show it up to `LIST_STALE` old while it is refreshed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::core::{Core, CoreError};
use crate::pods::Engine;
use crate::pods::naming::{self};

/// How old a cached workspace listing may be (changes by others show after this).
const LIST_FRESH: Duration = Duration::from_secs(1);
/// How old a listing a page may show while a fresh one is made in the background.
const LIST_STALE: Duration = Duration::from_secs(30);

impl<E: Engine> Core<E> {
    /// All workspaces of this instance: one engine round trip.
    ///
    /// The answer is at most [`LIST_FRESH`] old: concurrent callers share one engine call,
    /// and devaipod's own changes (up, stop, start, delete) are visible at once.
    pub async fn list(&self) -> Result<Vec<WorkspaceStatus>, CoreError> {
        if let Some(list) = self.cached_list(LIST_FRESH) {
            return Ok(self.visible(list));
        }
        let _one = self.list_call.lock().await;
        if let Some(list) = self.cached_list(LIST_FRESH) {
            return Ok(self.visible(list)); // made while this caller waited
        }
        let generation = self.list_generation.load(std::sync::atomic::Ordering::SeqCst);
        let pods = self.engine.list_pods(&[(naming::LABEL_INSTANCE, self.instance())]).await?;
        // A pool member no workspace took is not a workspace.
        let mut out: Vec<WorkspaceStatus> = pods
            .into_iter()
            .filter_map(|mut p| self.overlay(&mut p).then_some(p))
            .filter_map(WorkspaceStatus::from_pod)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        if let Ok(mut cache) = self.list_cache.lock()
            && self.list_generation.load(std::sync::atomic::Ordering::SeqCst) == generation
        {
            *cache = Some((Instant::now(), out.clone()));
        }
        Ok(self.visible(out))
    }

    /// Without the workspaces being removed (deleted: their pods go in the background).
    fn visible(&self, mut list: Vec<WorkspaceStatus>) -> Vec<WorkspaceStatus> {
        if !self.removing.is_empty() {
            list.retain(|w| !self.being_removed(&w.name));
        }
        list
    }

    /// The cached listing, if younger than `max_age`.
    fn cached_list(&self, max_age: Duration) -> Option<Vec<WorkspaceStatus>> {
        let cache = self.list_cache.lock().ok()?;
        cache.as_ref().filter(|(at, _)| at.elapsed() < max_age).map(|(_, list)| list.clone())
    }

    /// For pages: the shared listing, also when it is older than [`LIST_FRESH`] (up to
    /// [`LIST_STALE`]), while a fresh one is made in the background, so that a page waits
    /// for podman only when nothing is cached. Pages re-render on every event, so a change
    /// made elsewhere shows on the next render.
    pub async fn list_for_page(self: &Arc<Self>) -> Result<Vec<WorkspaceStatus>, CoreError> {
        let cached = self.list_cache.lock().ok().and_then(|c| c.clone());
        match cached {
            Some((at, list)) if at.elapsed() < LIST_FRESH => Ok(self.visible(list)),
            Some((at, list)) if at.elapsed() < LIST_STALE => {
                if !self.list_refreshing.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.list().await {
                            tracing::debug!("background listing failed: {e}");
                        }
                        me.list_refreshing.store(false, std::sync::atomic::Ordering::SeqCst);
                    });
                }
                Ok(self.visible(list))
            }
            _ => self.list().await,
        }
    }

    /// Forgets the cached listing after a change made here.
    pub(in crate::core) async fn changed(&self) {
        self.list_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut cache) = self.list_cache.lock() {
            *cache = None;
        }
    }
}
