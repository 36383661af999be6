//! [`Shared`]: the little state the game's handles ([`crate::Client`], [`crate::Events`])
//! hand to the driver without waiting: acknowledgements and a new token. Plain mutexes,
//! held for a push or a swap, never across an `.await`; a [`Notify`] wakes the driver.

use std::sync::{Mutex, MutexGuard, PoisonError};

use protocol::MessageId;
use tokio::sync::Notify;

/// Most acknowledgements waiting for the driver. The driver takes them all on every
/// wake, so the buffer only fills if the driver is stuck; then an acknowledgement is
/// dropped, which costs a replay on the next connect (where the duplicate is
/// acknowledged again), never a lost message.
pub(crate) const ACK_BUFFER_MAX: usize = 16 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Shared {
    acks: Mutex<Vec<MessageId>>,
    token: Mutex<Token>,
    /// Wakes the driver: acknowledgements or a token are waiting.
    pub(crate) wake: Notify,
}

#[derive(Debug, Default)]
struct Token {
    token: String,
    /// Set by `set_token`, cleared when a dial takes the token.
    changed: bool,
}

/// Locks, ignoring poisoning: the data (a list of ids, a string) cannot be left half
/// updated by a panic, so it is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(token: String) -> Self {
        Self {
            acks: Mutex::default(),
            token: Mutex::new(Token {
                token,
                changed: false,
            }),
            wake: Notify::new(),
        }
    }

    pub(crate) fn ack(&self, id: MessageId) {
        let first = {
            let mut acks = lock(&self.acks);
            if acks.len() < ACK_BUFFER_MAX {
                acks.push(id);
            } else {
                tracing::warn!(
                    id = id.0,
                    "acknowledgement buffer full; the message will be replayed"
                );
            }
            acks.len() == 1
        };
        // Only the first acknowledgement into an empty buffer wakes the driver: it takes
        // the whole buffer when it runs, so later ones ride on that wake. One pushed
        // after the driver took the buffer finds it empty and wakes it again.
        if first {
            self.wake.notify_one();
        }
    }

    pub(crate) fn take_acks(&self) -> Vec<MessageId> {
        std::mem::take(&mut *lock(&self.acks))
    }

    pub(crate) fn set_token(&self, token: String) {
        *lock(&self.token) = Token {
            token,
            changed: true,
        };
        self.wake.notify_one();
    }

    /// The token for a dial; clears the "changed" mark.
    pub(crate) fn take_token(&self) -> String {
        let mut t = lock(&self.token);
        t.changed = false;
        t.token.clone()
    }

    /// Whether `set_token` was called since the last dial.
    pub(crate) fn token_changed(&self) -> bool {
        lock(&self.token).changed
    }
}
