//! The event ring's ordering rules (the header, "The event ring"), checked under loom, which
//! runs each model in every interleaving and every outcome the C11 memory model allows.
//!
//! The kernel side is modelled as the Linux kernel memory model gives it: the worker's
//! `xchg(NEED_WAKEUP, Full)` is fully ordered (`atomic_xchg`, tools/memory-model: an `smp_mb()`
//! before and after), so it is a SeqCst swap followed by a SeqCst fence here; `load(Acquire)`
//! and `store(Release)` are `smp_load_acquire` and `smp_store_release`. The user side is what
//! the header's helpers do (`evnotify_ring_submit`, `evnotify_ring_reap`). Each model has a
//! twin with one ordering weakened, which loom must find wrong (`should_panic`), so that the
//! models are shown able to fail.

#[cfg(test)]
mod tests;
