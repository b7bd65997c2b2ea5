//! Writes that reach the store thread in the order they were queued.
//!
//! [`super::Store::write`] queues its job only when its future is first polled, and the node polls
//! the futures it waits on in no fixed order: two writes made one after the other could reach the
//! store the other way round. KB entries must be stored in seq order (a gap would hide a lost
//! write), so the owner queues them with [`super::Store::write_in_order`], which puts the job on
//! the store's channel at once. When the channel is full the job waits in a bounded overflow that
//! one task forwards in order, and every later write queues behind it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::{Job, StoreError, WriteFn};

/// Most writes waiting for room on the store's channel.
const MAX_OVERFLOW: usize = 4096;

/// Writes waiting for room on the store's channel, and whether a task is forwarding them.
#[derive(Default)]
pub(super) struct Overflow {
    waiting: Mutex<(VecDeque<Job>, bool)>,
}

impl Overflow {
    /// Queues `f` behind every write queued before it; the future resolves once it is durable.
    pub(super) fn write(
        self: &Arc<Self>,
        tx: &mpsc::Sender<Job>,
        f: WriteFn,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let refused = self.queue(tx, Job::Write(f, reply));
        async move {
            if let Some(e) = refused {
                return Err(e);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    fn queue(self: &Arc<Self>, tx: &mpsc::Sender<Job>, job: Job) -> Option<StoreError> {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let (waiting, forwarding) = &mut *w;
        if waiting.is_empty() && !*forwarding {
            match tx.try_send(job) {
                Ok(()) => return None,
                Err(mpsc::error::TrySendError::Closed(_)) => return Some(StoreError::Closed),
                Err(mpsc::error::TrySendError::Full(job)) => waiting.push_back(job),
            }
        } else if waiting.len() >= MAX_OVERFLOW {
            return Some(StoreError::Busy);
        } else {
            waiting.push_back(job);
        }
        if !*forwarding {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                waiting.pop_back();
                return Some(StoreError::Busy);
            };
            *forwarding = true;
            rt.spawn(self.clone().forward(tx.clone()));
        }
        None
    }

    /// Sends the waiting writes in order, then stops (the next overflow starts another).
    async fn forward(self: Arc<Self>, tx: mpsc::Sender<Job>) {
        loop {
            let job = {
                let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                match w.0.pop_front() {
                    Some(job) => job,
                    None => {
                        w.1 = false;
                        return;
                    }
                }
            };
            if let Err(mpsc::error::SendError(Job::Write(_, reply))) = tx.send(job).await {
                let _ = reply.send(Err(StoreError::Closed));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    /// Many writes queued from one task, each checking it follows the previous one, land in order
    /// even when they overflow the store's channel and their futures are polled last first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_reach_the_store_in_the_order_they_were_queued() {
        let store = Store::open_in_memory().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let n = super::super::QUEUE * 3;
        let mut futures = Vec::new();
        for i in 0..n {
            let seen = seen.clone();
            futures.push(store.write_in_order(move |_| {
                let mut s = seen.lock().unwrap();
                if s.last().is_some_and(|&l| l + 1 != i) {
                    return Err(StoreError::Corrupt(format!("{i} after {:?}", s.last())));
                }
                s.push(i);
                Ok(())
            }));
        }
        for f in futures.into_iter().rev() {
            f.await.unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), (0..n).collect::<Vec<_>>());
    }
}
