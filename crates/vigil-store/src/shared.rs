//! What processes sharing one store need to keep a meta document (credentials, schemas) in
//! step: [`SharedDocument`], which changes the document by compare-and-swap and reloads it
//! periodically, and its parts, a pause between compare-and-swap attempts that lost a race and
//! a task that polls for changes made elsewhere.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use rand::Rng;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

use crate::{MetaVersion, Store, StoreError};

/// Sleeps a random 1..2^attempt ms (at most 64 ms) after a lost compare-and-swap, so
/// processes that collided do not collide again in lockstep.
pub async fn contention_pause(attempt: u32) {
    let most = 1u64 << attempt.clamp(1, 6);
    let pause = rand::rng().random_range(1..=most);
    tokio::time::sleep(Duration::from_millis(pause)).await;
}

/// Calls `poll` with the target every `every`, until `stop` fires or the target is dropped
/// (only a [`Weak`] is held, so the task never keeps it alive). `poll` handles its own errors.
pub fn spawn_poll<T, F, Fut>(
    target: Weak<T>,
    mut stop: oneshot::Receiver<()>,
    every: Duration,
    poll: F,
) where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => {}
            }
            let Some(target) = target.upgrade() else {
                return;
            };
            poll(target).await;
        }
    });
}

/// Times a change is applied to the latest stored document and saved before giving up because
/// other processes keep changing the document first.
pub const MAX_ATTEMPTS: u32 = 16;

/// What a [`SharedDocument`] holds: a value kept as one store meta document.
pub trait Document: Clone + Send + Sync + 'static {
    /// The owner's error; store failures convert into it.
    type Error: From<StoreError> + Send + 'static;

    /// What the document holds, as messages name it (`credential`, `schema`).
    const LABEL: &'static str;

    /// Reads the stored bytes. `previous` is what memory holds (absent at open), for work
    /// worth reusing, such as schemas compiled already.
    fn decode(
        bytes: Vec<u8>,
        previous: Option<Arc<Self>>,
    ) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// The bytes to store.
    fn encode(document: Arc<Self>) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send;

    /// What memory holds while the store has no document, or why that is an error.
    fn absent() -> Result<Self, Self::Error>;

    /// An error of the owner's for a failure of the machinery (a task that panicked).
    fn internal(message: String) -> Self::Error;

    /// Told that a reload took in another process's change (to log it).
    fn reloaded(&self) {}

    /// Told that a periodic reload failed; memory keeps what it had (to log it).
    fn reload_failed(error: &Self::Error);
}

/// A meta document of the store that several processes read and change at once: the
/// credentials, the schemas.
///
/// Reads are in memory ([`current`](Self::current)). A change ([`update`](Self::update)) is
/// applied to the latest stored document and saved with [`Store::save_meta_if`] only if nobody
/// changed the document meanwhile; else the newer one is loaded and the change applied again
/// (at most [`MAX_ATTEMPTS`] times, with [`contention_pause`] between), so no process undoes
/// another's change. Only a saved change becomes visible: an acknowledged change is durable, a
/// failed save changes nothing. A background task reloads the document every `refresh_every`
/// to take in other processes' changes; it stops when the last clone is dropped. Cheap to
/// clone.
pub struct SharedDocument<T> {
    inner: Arc<Shared<T>>,
}

impl<T> Clone for SharedDocument<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> std::fmt::Debug for SharedDocument<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDocument")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

struct Shared<T> {
    store: Arc<dyn Store>,
    /// The meta document's name in the store.
    name: &'static str,
    /// What memory holds. A std lock: held only to swap or clone the `Arc`, never across
    /// `.await`.
    current: RwLock<Arc<T>>,
    /// Serialises changes and reloads within this process, and holds the store version
    /// `current` was read from (`None`: no document yet). The two are always replaced together.
    version: tokio::sync::Mutex<Option<MetaVersion>>,
    /// Dropped with the last handle, which stops the refresh task at once.
    _stop_refresh: oneshot::Sender<()>,
}

impl<T: Document> SharedDocument<T> {
    /// Loads the document `name` from `store` (what [`Document::absent`] says when there is
    /// none), then reloads it every `refresh_every` (longer than zero) in a task on the
    /// current Tokio runtime.
    pub async fn open(
        store: Arc<dyn Store>,
        name: &'static str,
        refresh_every: Duration,
    ) -> Result<Self, T::Error> {
        let (version, current) = match store.load_meta_versioned(name).await? {
            Some((version, bytes)) => (Some(version), T::decode(bytes, None).await?),
            None => (None, T::absent()?),
        };
        Ok(Self::start(store, name, refresh_every, version, current))
    }

    /// [`open`](Self::open), but when the store has no document, `create()` is saved first.
    /// When several processes start on an empty store at once, one creates it and the others
    /// load that one.
    pub async fn open_or_create(
        store: Arc<dyn Store>,
        name: &'static str,
        refresh_every: Duration,
        create: impl Fn() -> T,
    ) -> Result<Self, T::Error> {
        for _ in 0..MAX_ATTEMPTS {
            if let Some((version, bytes)) = store.load_meta_versioned(name).await? {
                let current = T::decode(bytes, None).await?;
                return Ok(Self::start(
                    store,
                    name,
                    refresh_every,
                    Some(version),
                    current,
                ));
            }
            let created = Arc::new(create());
            let bytes = T::encode(Arc::clone(&created)).await?;
            if let Some(version) = store.save_meta_if(name, None, &bytes).await? {
                let current = Arc::unwrap_or_clone(created);
                return Ok(Self::start(
                    store,
                    name,
                    refresh_every,
                    Some(version),
                    current,
                ));
            }
        }
        Err(contended::<T>())
    }

    fn start(
        store: Arc<dyn Store>,
        name: &'static str,
        refresh_every: Duration,
        version: Option<MetaVersion>,
        current: T,
    ) -> Self {
        let (stop_refresh, stopped) = oneshot::channel();
        let inner = Arc::new(Shared {
            store,
            name,
            current: RwLock::new(Arc::new(current)),
            version: tokio::sync::Mutex::new(version),
            _stop_refresh: stop_refresh,
        });
        spawn_poll(
            Arc::downgrade(&inner),
            stopped,
            refresh_every,
            |inner| async move {
                if let Err(e) = (Self { inner }).refresh().await {
                    T::reload_failed(&e);
                }
            },
        );
        Self { inner }
    }

    /// What memory holds now.
    pub fn current(&self) -> Arc<T> {
        self.inner.current()
    }

    /// Reloads the document now, if another process changed it, rather than at the next
    /// periodic refresh. Returns whether anything changed. On error memory keeps what it had.
    pub async fn refresh(&self) -> Result<bool, T::Error> {
        let mut version = self.inner.version.lock().await;
        let changed = self.inner.catch_up(&mut version).await?;
        if changed {
            self.current().reloaded();
        }
        Ok(changed)
    }

    /// Applies `change` to a copy of the latest stored document, saves the copy if the stored
    /// document is still the one it started from, then makes it current (see the type's doc).
    /// `change` returns its result and whether it changed anything: nothing is saved when not.
    ///
    /// Runs in a task of its own: a caller dropped halfway (a client gone, a timeout) cannot
    /// leave the document saved but not current, nor the other way round.
    pub async fn update<O, F>(&self, mut change: F) -> Result<O, T::Error>
    where
        O: Send + 'static,
        F: FnMut(&mut T) -> Result<(O, bool), T::Error> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let mut version = inner.version.lock().await;
            for attempt in 0..MAX_ATTEMPTS {
                if attempt > 0 {
                    contention_pause(attempt).await;
                }
                inner.catch_up(&mut version).await?;
                let mut next = T::clone(&inner.current());
                let (out, changed) = change(&mut next)?;
                if !changed {
                    return Ok(out);
                }
                let next = Arc::new(next);
                let bytes = T::encode(Arc::clone(&next)).await?;
                let Some(saved) = inner
                    .store
                    .save_meta_if(inner.name, *version, &bytes)
                    .await?
                else {
                    continue;
                };
                *inner
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = next;
                *version = Some(saved);
                return Ok(out);
            }
            Err(contended::<T>())
        })
        .await
        .map_err(|e| T::internal(format!("{} update task failed: {e}", T::LABEL)))?
    }
}

impl<T: Document> Shared<T> {
    fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes in the stored document when its version differs from `version`, the one memory
    /// holds (the caller holds the `version` lock, whose value it is). Returns whether it did.
    async fn catch_up(&self, version: &mut Option<MetaVersion>) -> Result<bool, T::Error> {
        // Polled every second on every node: compare the version before reading the document.
        if self.store.meta_version(self.name).await? == *version {
            return Ok(false);
        }
        let latest = self.store.load_meta_versioned(self.name).await?;
        let latest_version = latest.as_ref().map(|(v, _)| *v);
        if latest_version == *version {
            return Ok(false);
        }
        let next = match latest {
            None => T::absent()?,
            Some((_, bytes)) => T::decode(bytes, Some(self.current())).await?,
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        *version = latest_version;
        Ok(true)
    }
}

/// A change that lost the race to save [`MAX_ATTEMPTS`] times in a row. Nothing was changed;
/// the request can be retried (503).
fn contended<T: Document>() -> T::Error {
    StoreError::Unavailable(format!(
        "the {} document changed {MAX_ATTEMPTS} times while a change was being saved; \
         nothing was changed, try again",
        T::LABEL
    ))
    .into()
}
