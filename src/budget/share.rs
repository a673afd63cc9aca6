//! One connection's account in the [`Budget`]: what it holds, and the switch that closes it
//! when the budget decides it must pay.

use futures_util::task::AtomicWaker;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use tokio::sync::Notify;

use super::pool::Budget;
use super::CLOSE_POLICY;
use crate::ids::WorkerId;

/// Why a connection is being closed: the close frame it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    pub code: u16,
    pub reason: String,
}

/// A connection's account; cheap to clone, closed when the last clone goes.
#[derive(Clone, Debug)]
pub struct Share(pub(super) Arc<ShareState>);

#[derive(Debug)]
pub(super) struct ShareState {
    pub(super) id: u64,
    peer: SocketAddr,
    /// The worker on this connection, once its session named it (for the log).
    worker: OnceLock<WorkerId>,
    budget: Arc<Budget>,
    /// Everything this connection holds (inbound and outbound).
    pub(super) held: AtomicU64,
    /// The part of `held` read from the socket since the last complete message.
    inbound: AtomicU64,
    doomed: AtomicBool,
    eviction: Mutex<Option<Eviction>>,
    /// The socket reader, woken to fail at once when the connection is doomed.
    reader: AtomicWaker,
    /// The writer and anyone else waiting for the doom.
    doom_notify: Notify,
}

impl ShareState {
    pub(super) fn new(id: u64, peer: SocketAddr, budget: Arc<Budget>) -> ShareState {
        ShareState {
            id,
            peer,
            worker: OnceLock::new(),
            budget,
            held: AtomicU64::new(0),
            inbound: AtomicU64::new(0),
            doomed: AtomicBool::new(false),
            eviction: Mutex::new(None),
            reader: AtomicWaker::new(),
            doom_notify: Notify::new(),
        }
    }

    pub(super) fn is_doomed(&self) -> bool {
        self.doomed.load(Ordering::Acquire)
    }
}

impl Drop for ShareState {
    fn drop(&mut self) {
        let held = self.held.load(Ordering::Relaxed);
        self.budget.release(self, held);
        self.budget.forget(self.id);
    }
}

impl Share {
    /// Names the worker on this connection, for the log lines about it.
    pub fn identify(&self, worker: WorkerId) {
        let _ = self.0.worker.set(worker);
    }

    /// Charges `n` bytes; false (and the connection is closed) when the budget refuses it.
    pub fn charge(&self, n: u64) -> bool {
        if self.0.is_doomed() {
            return false;
        }
        if self.0.budget.charge(&self.0, n) {
            return true;
        }
        self.doom(
            CLOSE_POLICY,
            "connection over its share of the node's client memory budget",
        );
        false
    }

    /// Charges `n` bytes even over the limit (a close frame, a few bytes).
    pub fn charge_anyway(&self, n: u64) {
        self.0.budget.charge_anyway(&self.0, n);
    }

    /// Gives back `n` bytes.
    pub fn release(&self, n: u64) {
        self.0.budget.release(&self.0, n);
    }

    /// Bytes this connection holds now.
    pub fn held(&self) -> u64 {
        self.0.held.load(Ordering::Relaxed)
    }

    /// Charges `n` bytes read from the socket that are not a whole message yet.
    pub fn charge_inbound(&self, n: u64) -> bool {
        if !self.charge(n) {
            return false;
        }
        self.0.inbound.fetch_add(n, Ordering::Relaxed);
        true
    }

    /// A whole message arrived: what was read so far is no longer held for the client.
    pub fn settle_inbound(&self) {
        let read = self.0.inbound.swap(0, Ordering::Relaxed);
        if read > 0 {
            self.release(read);
        }
    }

    /// Closes the connection: its socket reader fails at once (the session ends and cleans
    /// up as for any disconnect) and its writer sends `code` and `reason` if it can.
    /// The first doom wins; later ones change nothing.
    pub fn doom(&self, code: u16, reason: &str) {
        {
            let mut eviction = self.0.eviction.lock().unwrap_or_else(|p| p.into_inner());
            if eviction.is_some() {
                return;
            }
            *eviction = Some(Eviction {
                code,
                reason: reason.to_string(),
            });
        }
        self.0.doomed.store(true, Ordering::Release);
        self.0.budget.log_eviction(
            self.0.peer,
            self.0.worker.get().copied(),
            self.held(),
            code,
            reason,
        );
        self.0.reader.wake();
        self.0.doom_notify.notify_waiters();
    }

    /// Why the connection is being closed, once it is.
    pub fn eviction(&self) -> Option<Eviction> {
        if !self.0.is_doomed() {
            return None;
        }
        self.0
            .eviction
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// For the socket reader: ready with the eviction once doomed, else registers `cx`.
    pub(super) fn poll_doomed(&self, cx: &mut Context<'_>) -> Poll<Eviction> {
        self.0.reader.register(cx.waker());
        match self.eviction() {
            Some(eviction) => Poll::Ready(eviction),
            None => Poll::Pending,
        }
    }

    /// Resolves once the connection is doomed.
    pub async fn doomed(&self) -> Eviction {
        loop {
            let notified = self.0.doom_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(eviction) = self.eviction() {
                return eviction;
            }
            notified.await;
        }
    }
}
