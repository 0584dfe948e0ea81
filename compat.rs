// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernels this module builds for, in one place: Linux 7.3 (the
//! default) and 7.2. Kbuild sets `evnotify_kernel_before_7_3` from the kernel's `VERSION` and
//! `PATCHLEVEL`; nothing outside this file looks at it. A leaf: it knows no type of the module
//! (the misc registration is generic over the device it registers).
//!
//! 7.2 has no `SpinLockIrq` (nor the `spin_lock_irq_disable` it is built on). The channel's
//! state is taken from eventfd wake-up callbacks and from its hrtimer callback, both with
//! interrupts off and possibly in hard interrupt context, so a plain spinlock would deadlock
//! against an interrupt on the CPU that holds it. On 7.2 the lock is therefore a spinlock
//! whose every acquisition saves and disables interrupts (`_raw_spin_lock_irqsave`), as C code
//! takes such locks: sound in any context, and lockdep sees it as the spinlock it is.

#[cfg(not(evnotify_kernel_before_7_3))]
mod imp {
    use kernel::{
        miscdevice::{
            MiscDevice,
            MiscDeviceOptions,
            MiscDeviceRegistration, //
        },
        prelude::*,
    };

    pub(crate) use kernel::sync::SpinLockIrq as IrqSafeLock;

    /// The registration of `/dev/evnotify`. 7.3's names this module as the owner of the
    /// device's vtable, so the VFS holds a module reference for each open file and `rmmod`
    /// refuses while one is open.
    pub(crate) type MiscRegistration<T> = MiscDeviceRegistration<T>;

    /// Registers the misc device `T`.
    pub(crate) fn register_misc<T: MiscDevice>(
        opts: MiscDeviceOptions,
    ) -> impl PinInit<MiscRegistration<T>, Error> {
        MiscDeviceRegistration::register(opts)
    }

    /// `EOPNOTSUPP`.
    pub(crate) fn eopnotsupp() -> kernel::error::Error {
        kernel::error::code::EOPNOTSUPP
    }

    /// Initialiser of an [`IrqSafeLock`] named `$name` (a lockdep class of its own).
    macro_rules! new_irq_safe_lock {
        ($inner:expr, $name:literal) => {
            kernel::new_spinlock_irq!($inner, $name)
        };
    }
    pub(crate) use new_irq_safe_lock;

    /// Takes `lock`, a C `spinlock_t` whose users take it with interrupts off.
    ///
    /// # Safety
    ///
    /// `lock` must point to an initialised `spinlock_t`, not held by the caller.
    pub(crate) unsafe fn c_lock_irq(lock: *mut kernel::bindings::spinlock_t) {
        // SAFETY: By the function's safety requirement.
        unsafe { kernel::bindings::spin_lock_irq_disable(lock) }
    }

    /// Releases what [`c_lock_irq`] took.
    ///
    /// # Safety
    ///
    /// The caller must hold `lock` through [`c_lock_irq`].
    pub(crate) unsafe fn c_unlock_irq(lock: *mut kernel::bindings::spinlock_t) {
        // SAFETY: By the function's safety requirement.
        unsafe { kernel::bindings::spin_unlock_irq_enable(lock) }
    }
}

#[cfg(evnotify_kernel_before_7_3)]
mod imp {
    use core::marker::PhantomData;
    use kernel::{
        bindings,
        error::{
            to_result,
            Error, //
        },
        ffi::{
            c_char,
            c_ulong, //
        },
        miscdevice::{
            MiscDevice,
            MiscDeviceOptions,
            MiscDeviceRegistration, //
        },
        prelude::*,
        sync::lock::{
            Backend,
            Lock, //
        },
        types::Opaque,
    };

    // `spinlock_t` is a sleeping lock there: the casts below would be wrong.
    #[cfg(CONFIG_PREEMPT_RT)]
    compile_error!("rust_evnotify on Linux 7.2 does not support PREEMPT_RT");
    // The `_raw_spin_*` calls below need the out-of-line lock functions. Without them the
    // module would not link (modpost: undefined symbol); say so here instead.
    #[cfg(any(
        not(CONFIG_SMP),
        CONFIG_INLINE_SPIN_LOCK_IRQ,
        CONFIG_INLINE_SPIN_LOCK_IRQSAVE,
        CONFIG_INLINE_SPIN_UNLOCK_IRQ,
        CONFIG_INLINE_SPIN_UNLOCK_IRQRESTORE
    ))]
    compile_error!("rust_evnotify on Linux 7.2 needs SMP and out-of-line irq spinlock functions");

    /// 7.2's misc device vtable for `T`, with this module as its owner, which 7.2 leaves out
    /// (7.3 added it). The VFS pins the module for each open file through it.
    struct OwnedFops<T>(PhantomData<T>);

    impl<T: MiscDevice> OwnedFops<T> {
        const FOPS: bindings::file_operations = bindings::file_operations {
            owner: &raw mut bindings::__this_module,
            // SAFETY: `into_raw` points `fops` at the kernel crate's constant vtable for `T`,
            // which this copies.
            ..unsafe { *MiscDeviceOptions { name: c"evnotify" }.into_raw::<T>().fops }
        };

        /// The vtable, as a constant promoted to `'static`, as the kernel crate's own is.
        const fn get() -> &'static bindings::file_operations {
            &Self::FOPS
        }
    }

    /// The registration of a misc device `T` on 7.2: the kernel crate's, but with
    /// [`OwnedFops`].
    ///
    /// 7.2's `MiscDeviceRegistration` registers a vtable with no owner, so `misc_open` would
    /// take no module reference for an open channel and `rmmod` would unload the module under
    /// it. With [`OwnedFops`], `misc_open`'s `fops_get` takes the reference before any of this
    /// module's code runs, on every path, and `__fput` drops it after `release` has returned:
    /// exactly as on 7.3, whose registration sets the owner.
    ///
    /// # Invariants
    ///
    /// `inner` is registered with `misc_register` until the registration is dropped.
    #[repr(transparent)]
    #[pin_data(PinnedDrop)]
    pub(crate) struct MiscRegistration<T> {
        #[pin]
        inner: Opaque<bindings::miscdevice>,
        _device: PhantomData<T>,
    }

    // The kernel crate's `open` trampoline takes the registered `miscdevice` for a
    // `MiscDeviceRegistration<T>`, which is `repr(transparent)` over `Opaque<miscdevice>`, as
    // this is (`PhantomData` has no size); the module's `open` does not use it.
    const _: () = assert!(
        size_of::<MiscRegistration<()>>() == size_of::<MiscDeviceRegistration<()>>()
            && align_of::<MiscRegistration<()>>() == align_of::<MiscDeviceRegistration<()>>()
    );

    // SAFETY: `misc_deregister` may be called from any thread, as for `MiscDeviceRegistration`.
    unsafe impl<T> Send for MiscRegistration<T> {}
    // SAFETY: It has no `&self` methods.
    unsafe impl<T> Sync for MiscRegistration<T> {}

    /// Registers the misc device `T` with [`OwnedFops`].
    pub(crate) fn register_misc<T: MiscDevice>(
        opts: MiscDeviceOptions,
    ) -> impl PinInit<MiscRegistration<T>, Error> {
        try_pin_init!(MiscRegistration {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                let mut dev = opts.into_raw::<T>();
                dev.fops = OwnedFops::<T>::get();
                // SAFETY: The initialiser may write to `slot`.
                unsafe { slot.write(dev) };
                // SAFETY: `slot` holds a complete `miscdevice`. It is pinned, and deregistered
                // by `drop` before its memory goes.
                // INVARIANT: On success it is registered.
                to_result(unsafe { bindings::misc_register(slot) })
            }),
            _device: PhantomData,
        })
    }

    #[pinned_drop]
    impl<T> PinnedDrop for MiscRegistration<T> {
        fn drop(self: Pin<&mut Self>) {
            // SAFETY: By the type invariant, it is registered.
            unsafe { bindings::misc_deregister(self.inner.get()) };
        }
    }

    /// `EOPNOTSUPP`, which 7.2's `error::code` does not name.
    pub(crate) fn eopnotsupp() -> Error {
        Error::from_errno(-(bindings::EOPNOTSUPP as i32))
    }

    /// A spinlock taken with interrupts saved and disabled, in any context.
    pub(crate) struct IrqSaveBackend;

    /// A spinlock taken with interrupts off: 7.2's stand-in for `SpinLockIrq`.
    pub(crate) type IrqSafeLock<T> = Lock<T, IrqSaveBackend>;

    /// Initialiser of an [`IrqSafeLock`] named `$name` (a lockdep class of its own).
    macro_rules! new_irq_safe_lock {
        ($inner:expr, $name:literal) => {
            $crate::compat::IrqSafeLock::new(
                $inner,
                kernel::optional_name!($name),
                kernel::static_lock_class!(),
            )
        };
    }
    pub(crate) use new_irq_safe_lock;

    /// The `raw_spinlock_t` inside a `spinlock_t`: its first member without PREEMPT_RT.
    fn raw(ptr: *mut bindings::spinlock_t) -> *mut bindings::raw_spinlock_t {
        ptr.cast()
    }

    // SAFETY: `lock` and `try_lock` take the spinlock and save the interrupt state in the guard;
    // `unlock` releases it and restores that state, so the lock is held exactly while a guard
    // exists, with interrupts off throughout.
    unsafe impl Backend for IrqSaveBackend {
        type State = bindings::spinlock_t;
        type GuardState = c_ulong;

        unsafe fn init(
            ptr: *mut Self::State,
            name: *const c_char,
            key: *mut bindings::lock_class_key,
        ) {
            // SAFETY: The caller passes a valid place, name and key, as for `SpinLock`.
            unsafe { bindings::__spin_lock_init(ptr, name, key) }
        }

        unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
            // SAFETY: The lock is initialised (by the caller's guarantee); without PREEMPT_RT
            // its `raw_spinlock_t` is at its start.
            unsafe { bindings::_raw_spin_lock_irqsave(raw(ptr)) }
        }

        /// Never succeeds: nothing here tries, and 7.2 has no trylock that saves interrupts.
        unsafe fn try_lock(_ptr: *mut Self::State) -> Option<Self::GuardState> {
            None
        }

        unsafe fn unlock(ptr: *mut Self::State, flags: &Self::GuardState) {
            // SAFETY: The caller holds the lock, taken by `lock` with these flags.
            unsafe { bindings::_raw_spin_unlock_irqrestore(raw(ptr), *flags) }
        }

        unsafe fn assert_is_held(ptr: *mut Self::State) {
            // SAFETY: The lock is initialised.
            unsafe { bindings::spin_assert_is_held(ptr) }
        }
    }

    /// Takes `lock`, a C `spinlock_t` whose users take it with interrupts off.
    ///
    /// # Safety
    ///
    /// `lock` must point to an initialised `spinlock_t`, not held by the caller, and
    /// interrupts must be on (process context).
    pub(crate) unsafe fn c_lock_irq(lock: *mut bindings::spinlock_t) {
        // SAFETY: By the function's safety requirement, as in `IrqSaveBackend::lock`.
        unsafe { bindings::_raw_spin_lock_irq(raw(lock)) }
    }

    /// Releases what [`c_lock_irq`] took.
    ///
    /// # Safety
    ///
    /// The caller must hold `lock` through [`c_lock_irq`].
    pub(crate) unsafe fn c_unlock_irq(lock: *mut bindings::spinlock_t) {
        // SAFETY: By the function's safety requirement.
        unsafe { bindings::_raw_spin_unlock_irq(raw(lock)) }
    }
}

pub(crate) use imp::*;

/// A module parameter's value: 7.3 returns it, 7.2 a reference to it.
pub(crate) fn param<T: Copy>(value: impl core::borrow::Borrow<T>) -> T {
    *value.borrow()
}

/// `VM_MAYSHARE`: 7.2's bindings give it `VM_MAYEXEC`'s value (its `bindings_helper.h` reads
/// `RUST_CONST_HELPER_VM_MAYSHARE = VM_MAYEXEC`), so it is derived here, on both kernels, from
/// `VM_SHARED`: each `VM_MAY*` is its `VM_*` shifted left by 4, as `mprotect`'s check
/// (`newflags & ~(newflags >> 4)`) relies on.
pub(crate) const VM_MAYSHARE: kernel::mm::virt::vm_flags_t = kernel::mm::virt::flags::SHARED << 4;

#[cfg(not(evnotify_kernel_before_7_3))]
const _: () = assert!(VM_MAYSHARE == kernel::mm::virt::flags::MAYSHARE);
