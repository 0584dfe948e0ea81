//! `evnotify`: inspect and exercise `/dev/evnotify` channels.
//!
//! Each run opens its own channel (a channel lives as long as its file), sets it up as asked
//! and shows what flows through it; `stat` lists the channels of every process instead.

mod args;
mod dev;
mod error;
mod info;
mod json;
mod manpage;
mod ping;
mod signal;
mod stat;
mod stat_table;
mod timer;
mod watch;

use anyhow::Result;
use args::{Cli, Cmd};
use clap::{CommandFactory, Parser};
use dev::Dev;
use info::info;
use json::Output;
use ping::ping;
use signal::signal;
use stat_table::stat;
use std::{io, process::ExitCode};
use timer::timer;
use watch::watch;

fn run(cli: Cli) -> Result<()> {
    let out = Output {
        json: cli.json || cli.pretty,
        pretty: cli.pretty,
    };
    match cli.cmd {
        Cmd::Stat { verbose } => {
            if cli.busypoll.is_some() {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "--busypoll sets a channel's limit, and stat opens no channel",
                    )
                    .exit();
            }
            return stat(&cli.device, out, verbose);
        }
        Cmd::Manpage { dir } => return manpage::write(&dir),
        Cmd::Completions { shell } => {
            let mut cmd = args::completion_command();
            clap_complete::generate(shell, &mut cmd, "evnotify", &mut io::stdout());
            return Ok(());
        }
        _ => {}
    }
    let dev = Dev::open(&cli.device)?;
    if let Some(limit) = cli.busypoll {
        dev.set_busypoll(limit)?;
    }
    match cli.cmd {
        Cmd::Info => info(&dev, out),
        Cmd::Ping(a) => ping(&dev, &a, out),
        Cmd::Timer {
            period,
            ticks,
            slot,
        } => timer(&dev, period, ticks, slot, out),
        Cmd::Signal { signo, count, slot } => signal(&dev, signo, count, slot, out),
        Cmd::Watch {
            timer,
            kick_every,
            duration,
        } => watch(&dev, timer, kick_every, duration, out),
        Cmd::Stat { .. } | Cmd::Manpage { .. } | Cmd::Completions { .. } => {
            unreachable!("handled above")
        }
    }
}

fn main() -> ExitCode {
    // Like other filters (`evnotify stat | head`): a closed pipe ends the program quietly
    // instead of making `println!` panic. Rust starts with SIGPIPE ignored.
    // SAFETY: Restoring a signal's default disposition, before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evnotify: {e:#}");
            if let Some(hint) = error::hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
