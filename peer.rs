// SPDX-License-Identifier: GPL-2.0

//! The channel open as another file descriptor: the only code that looks inside another file.
//! Owns the record of what a channel's file operations are; calls only `channel`, for the type.

use crate::channel::Channel;
use kernel::{
    fs::{
        File,
        LocalFile, //
    },
    prelude::*,
    sync::atomic::{
        Atomic,
        Relaxed, //
    },
    types::ForeignOwnable,
};

/// The address of the file operations of an open channel (0 before the first open): the misc
/// device's on 7.3, `compat`'s own copy of them on 7.2. A file is a channel if and only if it
/// has them.
static CHANNEL_FOPS: Atomic<usize> = Atomic::new(0);

/// Records what an open channel's file operations are; `open` calls it with each new channel
/// (they are all the same).
pub(crate) fn opened(file: &File) {
    // SAFETY: `file` is valid, and being opened by us: `f_op` is ours and stays as it is.
    let fops = unsafe { (*file.as_ptr()).f_op };
    CHANNEL_FOPS.store(fops as usize, Relaxed);
}

/// Runs `f` on the channel open as `fd` in the calling process. Fails with `EBADF` if `fd` is
/// not open, `EINVAL` if it is not a channel.
pub(crate) fn with_channel<R>(fd: i32, f: impl FnOnce(&Channel) -> R) -> Result<R> {
    let fd = u32::try_from(fd).map_err(|_| EBADF)?;
    let file = LocalFile::fget(fd)?;
    let raw = file.as_ptr();
    // SAFETY: `file` holds a reference to the file, so it is valid.
    let fops = unsafe { (*raw).f_op } as usize;
    let ours = CHANNEL_FOPS.load(Relaxed);
    if ours == 0 || fops != ours {
        return Err(EINVAL);
    }
    // SAFETY: A file with the channel's file operations was opened by the misc device's `open`
    // trampoline, which sets `private_data` from `KBox<Channel>::into_foreign` once `open`
    // succeeded, before the file is installed in any table (a file whose `open` failed never
    // is). `release` takes it back only after the last reference is dropped, and `file` holds
    // one until `f` has returned.
    let channel = unsafe { <KBox<Channel> as ForeignOwnable>::borrow((*raw).private_data) };
    Ok(f(channel))
}
