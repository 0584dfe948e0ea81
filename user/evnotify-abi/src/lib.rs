//! The module's ABI mirror (`uapi.rs` at the top of the repository), compiled on the host.
//!
//! `uapi.rs` uses a handful of `kernel` crate items; this crate names itself `kernel` and
//! stands in for them with their user-space equivalents, so that the file the module builds
//! is the file the tests compare with the C header. Nothing here is used at run time.

extern crate self as kernel;

#[path = "../../../uapi.rs"]
#[allow(dead_code)]
pub(crate) mod uapi;

/// `kernel::ioctl`: the ioctl number encoding, from nix (correct for each architecture).
pub mod ioctl {
    /// `_IO`: an ioctl with no argument.
    #[allow(non_snake_case)]
    pub const fn _IO(ty: u32, nr: u32) -> u32 {
        nix::request_code_none!(ty, nr) as u32
    }
    /// `_IOR`: read-only ioctl carrying a `T`.
    #[allow(non_snake_case)]
    pub const fn _IOR<T>(ty: u32, nr: u32) -> u32 {
        nix::request_code_read!(ty, nr, core::mem::size_of::<T>()) as u32
    }
    /// `_IOW`: write-only ioctl carrying a `T`.
    #[allow(non_snake_case)]
    pub const fn _IOW<T>(ty: u32, nr: u32) -> u32 {
        nix::request_code_write!(ty, nr, core::mem::size_of::<T>()) as u32
    }
}

/// `kernel::transmute`: marker traits only.
pub mod transmute {
    /// Stand-in for `kernel::transmute::AsBytes`.
    ///
    /// # Safety
    ///
    /// As in the kernel: the type has no padding or uninitialised bytes.
    pub unsafe trait AsBytes {}
    /// Stand-in for `kernel::transmute::FromBytes`.
    ///
    /// # Safety
    ///
    /// As in the kernel: every bit pattern is a valid value.
    pub unsafe trait FromBytes {}
}

/// `kernel::bindings`: the one C constant `uapi.rs` reads.
pub mod bindings {
    /// `SIGIO` from the C library, which has the kernel's value.
    pub const SIGIO: u32 = libc::SIGIO as u32;
}

/// `kernel::prelude`: `Result` with a kernel-style errno error.
pub mod prelude {
    /// An errno, as `kernel::error::Error`.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Error(pub i32);
    /// `kernel::prelude::Result`.
    pub type Result<T = (), E = Error> = core::result::Result<T, E>;
    /// `kernel::error::code::EINVAL`.
    pub const EINVAL: Error = Error(libc::EINVAL);
}

#[cfg(test)]
mod tests;
