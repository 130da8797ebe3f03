//! What processes sharing one store need to keep a meta document (credentials, schemas) in
//! step: a pause between compare-and-swap attempts that lost a race, and a task that polls for
//! changes made elsewhere.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::Rng;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

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
