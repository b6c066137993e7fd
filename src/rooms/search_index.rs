//! Keeps the full-text search index in step with the stored events, in
//! batches: storing an event only marks the index stale, and a background task
//! indexes what is new a moment later (one FTS segment for many events rather
//! than one per event, which would double the pages each send writes). A
//! search brings the index up to date first, so results never lag behind.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use event_listener::Event;

use crate::error::Result;
use crate::rooms::Engine;

/// How long new events wait to be indexed, so a burst shares one batch.
const BATCH_DELAY: Duration = Duration::from_millis(500);

/// Whether new events wait to be indexed, and the background task's wake-up.
#[derive(Default)]
pub struct SearchIndex {
    stale: Cell<bool>,
    wake: Event,
}

impl SearchIndex {
    /// Notes that searchable events may have been stored.
    pub fn note_new_events(&self) {
        if !self.stale.replace(true) {
            self.wake.notify(1);
        }
    }
}

/// Indexes every event stored so far (before a search runs).
pub fn catch_up(app: &Engine) -> Result<()> {
    app.search_index.stale.set(false);
    app.storage().index_all_new_events()
}

/// Starts the background task that indexes new events in batches; it also
/// indexes what a previous run stored but did not index.
pub fn start(app: &Rc<Engine>) {
    app.search_index.stale.set(true);
    let app_for_task = app.clone();
    app.executor
        .spawn(async move {
            let app = app_for_task;
            loop {
                let listener = app.search_index.wake.listen();
                if !app.search_index.stale.get() {
                    listener.await;
                }
                smol::Timer::after(BATCH_DELAY).await;
                app.search_index.stale.set(false);
                // One bounded step per transaction, letting requests in between.
                loop {
                    // Bound first: the storage borrow must end before the await.
                    let step = app.storage().index_new_events();
                    match step {
                        Ok(true) => smol::future::yield_now().await,
                        Ok(false) => break,
                        Err(error) => {
                            log::warn!("search indexing failed: {error}");
                            break;
                        }
                    }
                }
            }
        })
        .detach();
}
