// SPDX-License-Identifier: GPL-2.0

//! `/dev/evnotify`: eventfd notification channels served by kernel threads.
//!
//! Every open file is a channel with [`uapi::NR_SLOTS`] notify slots, served by a kernel thread,
//! `evnotify/<id>`: its own, started by the first call that queues work, or one it shares with
//! other channels (`EVNOTIFY_IOC_SHARE_WORKER`). User space attaches an eventfd
//! to a slot and kicks the slot by ioctl; the thread answers each kick by signalling the slot's
//! eventfd once. A kick on a slot with no eventfd is consumed and counted as dropped. The ABI is `include/uapi/linux/evnotify.h`.
//!
//! ```c
//! #include <fcntl.h>
//! #include <stdint.h>
//! #include <sys/eventfd.h>
//! #include <sys/ioctl.h>
//! #include <unistd.h>
//! #include <linux/evnotify.h>
//!
//! int main(void)
//! {
//!     int ch = open("/dev/evnotify", O_RDWR | O_CLOEXEC);
//!     int efd = eventfd(0, EFD_CLOEXEC);
//!     struct evnotify_attach at = { .slot = 0, .fd = efd };
//!     struct evnotify_kick k = { .slot = 0, .count = 3 };
//!     uint64_t n = 0, sum = 0;
//!
//!     if (ch < 0 || efd < 0 || ioctl(ch, EVNOTIFY_IOC_ATTACH, &at) ||
//!         ioctl(ch, EVNOTIFY_IOC_KICK, &k))
//!         return 1;
//!     while (sum < 3 && read(efd, &n, sizeof(n)) == sizeof(n))
//!         sum += n;
//!     return sum == 3 ? 0 : 1;
//! }
//! ```

mod alarm;
mod busypoll;
mod channel;
mod compat;
mod deadlines;
mod eventfd;
mod kcov;
mod kthread;
mod limits;
mod peer;
mod ring;
mod shared;
mod signal;
mod slots;
mod timer;
mod uapi;
mod worker;

use channel::Channel;
use kernel::{
    fs::File,
    ioctl::_IOC_SIZE,
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    mm::virt::VmaNew,
    prelude::*,
    seq_file::SeqFile,
    uaccess::UserSlice, //
};

module! {
    type: EvnotifyModule,
    name: "rust_evnotify",
    authors: ["rust_evnotify developers"],
    description: "eventfd notification channels served by kernel threads",
    license: "GPL",
    params: {
        max_channels: u32 {
            default: 4096,
            description: "Most channels open at once (each one may run a kernel thread); more get EMFILE",
        },
        max_user_channels: u32 {
            default: 1024,
            description: "Most channels one user (effective uid) may have open at once; more get EMFILE",
        },
        busypoll_ns: u32 {
            default: 200000,
            description: "Busy-poll limit of new channels' threads in ns (0: off; above 1000000 counts as 1000000)",
        },
    },
}

#[pin_data]
struct EvnotifyModule {
    #[pin]
    _miscdev: compat::MiscRegistration<Channel>,
    /// Dropped after the device is gone, when no channel can be open.
    _limits: limits::Limits,
}

impl kernel::InPlaceModule for EvnotifyModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            // Initialised in this order: the limits before anyone can open the device.
            // SAFETY: The only call, before the device is registered.
            _limits: unsafe { limits::Limits::new() },
            _miscdev <- compat::register_misc(MiscDeviceOptions {
                name: c"evnotify",
            }),
        })
    }
}

#[vtable]
impl MiscDevice for Channel {
    type Ptr = KBox<Self>;

    fn open(file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let max = compat::param(module_parameters::max_channels.value());
        let max_user = compat::param(module_parameters::max_user_channels.value());
        let busypoll_ns = compat::param(module_parameters::busypoll_ns.value());
        let channel = KBox::new(
            Channel::new(max, max_user, busypoll_ns)?,
            GFP_KERNEL_ACCOUNT,
        )?;
        // Only channels' files have these file operations (see `peer`).
        peer::opened(file);
        Ok(channel)
    }

    fn ioctl(me: &Channel, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        // Each command number encodes its size and direction: any other is unknown here. Made
        // in each arm, where the size is a constant: no check of it can fail there.
        let user = || UserSlice::new(UserPtr::from_addr(arg), _IOC_SIZE(cmd));
        match cmd {
            uapi::IOC_VERSION => user().writer().write(&uapi::Version {
                api_version: uapi::API_VERSION,
                nr_slots: uapi::NR_SLOTS as u32,
                features: uapi::F_NOTIFY
                    | uapi::F_SLOTS
                    | uapi::F_KICKFD
                    | uapi::F_FDINFO
                    | uapi::F_TIMER
                    | uapi::F_SIGNAL
                    | uapi::F_BUSYPOLL
                    | uapi::F_WORKERS
                    | uapi::F_TIMER_ABSTIME
                    | uapi::F_RING
                    | if cfg!(CONFIG_CGROUPS) {
                        uapi::F_CGROUPS
                    } else {
                        0
                    },
            })?,
            uapi::IOC_ATTACH => {
                let req: uapi::Attach = user().reader().read()?;
                uapi::must_be_zero(req.flags, req.reserved)?;
                me.attach(uapi::slot(req.slot)?, req.fd)?
            }
            uapi::IOC_KICK => {
                let req: uapi::Kick = user().reader().read()?;
                uapi::must_be_zero(req.flags, req.reserved)?;
                if req.count == 0 || req.count > uapi::MAX_KICK {
                    return Err(EINVAL);
                }
                me.kick(uapi::slot(req.slot)?, req.count)?
            }
            uapi::IOC_KICKFD => {
                let req: uapi::Attach = user().reader().read()?;
                uapi::must_be_zero(req.flags, req.reserved)?;
                me.attach_kickfd(uapi::slot(req.slot)?, req.fd)?
            }
            uapi::IOC_TIMER => {
                let req: uapi::TimerReq = user().reader().read()?;
                let first = uapi::timer_start(&req)?;
                me.set_timer(uapi::slot(req.slot)?, req.period_ns, req.ticks, first)?
            }
            uapi::IOC_SIGNAL => {
                let req: uapi::SignalReq = user().reader().read()?;
                uapi::must_be_zero(req.flags, req.reserved)?;
                me.set_signal(uapi::slot(req.slot)?, req.signo)?
            }
            uapi::IOC_BUSYPOLL => {
                let req: uapi::BusyPollReq = user().reader().read()?;
                uapi::must_be_zero(req.flags, req.reserved)?;
                me.set_busypoll(req.limit_ns)?
            }
            uapi::IOC_STATS => user().writer().write(&me.stats())?,
            uapi::IOC_SHARE_WORKER => {
                let req: uapi::ShareReq = user().reader().read()?;
                uapi::must_be_zero(req.flags, req.reserved)?;
                peer::with_channel(req.fd, |other| me.share_worker(other))??
            }
            uapi::IOC_WORKER => user().writer().write(&me.worker_info())?,
            uapi::IOC_RING_ENTER => me.ring_enter()?,
            uapi::IOC_RING_STATS => user().writer().write(&me.ring_stats()?)?,
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }

    fn mmap(me: &Channel, _file: &File, vma: &VmaNew) -> Result {
        me.map_ring(vma)
    }

    fn show_fdinfo(me: &Channel, m: &SeqFile, _file: &File) {
        me.show_fdinfo(m);
    }
}
