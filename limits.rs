// SPDX-License-Identifier: GPL-2.0

//! The channel limits: how many channels are open, in all and per user (`max_channels`,
//! `max_user_channels`). Owns one global table; calls nothing of the module.

use kernel::{
    prelude::*,
    task::Kuid, //
};

/// Channels open now, in all and per user (by euid at open).
struct Users {
    total: u32,
    per_user: KVec<(Kuid, u32)>,
}

kernel::sync::global_lock! {
    // SAFETY: Initialised by `Limits::new` in the module's `init`, before the device exists.
    unsafe(uninit) static USERS: Mutex<Users> = Users { total: 0, per_user: KVec::new() };
}

/// The channel limits' table, from module load to unload.
pub(crate) struct Limits;

impl Limits {
    /// Initialises the table.
    ///
    /// # Safety
    ///
    /// Must be called once, before any channel can be opened.
    pub(crate) unsafe fn new() -> Self {
        // SAFETY: By the safety requirement, this is the first and only initialisation, before
        // any use.
        unsafe { USERS.init() };
        Self
    }
}

impl Drop for Limits {
    fn drop(&mut self) {
        // A static is never dropped: free the table's buffer before the module goes.
        drop(core::mem::take(&mut USERS.lock().per_user));
    }
}

/// One of the channel places of a user, held by an open channel and given back on drop.
pub(crate) struct OpenSlot {
    uid: Kuid,
}

impl OpenSlot {
    /// Takes a place for the caller's euid, or fails with `EMFILE` (as inotify does past its
    /// instance limits) if `max` channels are open in all or `max_user` by that user. The lock
    /// is held for a short search and, for a user's first channel, a small `GFP_KERNEL`
    /// allocation (which may enter reclaim); never across thread creation or a channel's work.
    pub(crate) fn take(max: u32, max_user: u32) -> Result<Self> {
        let uid = Kuid::current_euid();
        let mut users = USERS.lock();
        if users.total >= max {
            return Err(EMFILE);
        }
        match users.per_user.iter_mut().find(|(u, _)| *u == uid) {
            Some((_, n)) if *n >= max_user => return Err(EMFILE),
            Some((_, n)) => *n += 1,
            None if max_user == 0 => return Err(EMFILE),
            None => users.per_user.push((uid, 1), GFP_KERNEL)?,
        }
        users.total += 1;
        Ok(Self { uid })
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let mut users = USERS.lock();
        users.total -= 1;
        // The user's entry (there since `take`) loses one, and goes with its last.
        users.per_user.retain(|(u, n)| {
            if *u == self.uid {
                *n -= 1;
            }
            *n != 0
        });
    }
}
