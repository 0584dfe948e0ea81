//! The manual pages, generated from the clap definitions: `evnotify.1` and one
//! `evnotify-<command>.1` per command, as git has them.

use crate::args::{Cli, SECTIONS};
use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_mangen::Man;
use std::{fs, path::Path};

/// `evnotify.1`: clap_mangen's sections, then ours under their own headings (clap_mangen
/// would put them all under one "EXTRA").
pub fn main_page() -> Result<Vec<u8>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    let mut roff = roff::Roff::new();
    for (heading, text) in SECTIONS {
        roff.control("SH", [*heading]).text([roff::roman(*text)]);
    }
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(without_repeated_preamble(&out))
}

/// Each of clap_mangen's sections starts with the same two-line string definition; once is
/// enough.
fn without_repeated_preamble(page: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(page);
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    for line in text.lines() {
        let preamble = line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq");
        if preamble && !seen.insert(line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

/// Writes every page into `dir`, and for each visible alias (`list`) a page that sources
/// its command's (`.so`), as man-db and mandoc follow.
pub fn write(dir: &Path) -> Result<()> {
    let ctx = || format!("write the manual pages into {}", dir.display());
    fs::create_dir_all(dir).with_context(ctx)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd.clone(), dir).with_context(ctx)?;
    fs::write(dir.join("evnotify.1"), main_page()?).with_context(ctx)?;
    for sub in cmd.get_subcommands() {
        for alias in sub.get_visible_aliases() {
            let page = format!(".so man1/evnotify-{}.1\n", sub.get_name());
            fs::write(dir.join(format!("evnotify-{alias}.1")), page).with_context(ctx)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_generated_and_name_every_command() {
        let dir = crate::stat::tests::temp_dir("man");
        write(&dir).unwrap();
        let main = fs::read_to_string(dir.join("evnotify.1")).unwrap();
        let cmd = Cli::command();
        let names: Vec<_> = cmd
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_owned())
            .collect();
        assert_eq!(names.len(), 6, "{names:?}");
        for name in &names {
            // The SUBCOMMANDS section lists each command, and each has its own page.
            assert!(main.contains(&format!("evnotify\\-{name}(1)")), "{name}");
            let page = fs::read_to_string(dir.join(format!("evnotify-{name}.1"))).unwrap();
            assert!(page.starts_with(".ie"), "{name}: {:?}", &page[..40]);
            assert!(page.contains(&format!(".TH evnotify-{name} 1")), "{name}");
        }
        assert!(!main.contains("manpage"), "the hidden command is listed");
        assert_eq!(main.matches(".el .ds Aq").count(), 1);
        for (heading, _) in SECTIONS {
            let sh = main.lines().filter(|l| l.starts_with(".SH "));
            assert!(sh.clone().any(|l| l.contains(heading)), "{heading}");
        }
        assert!(main.contains("\\-\\-device"));
        // The alias has a page, which is the command's, and the command's page names it.
        let list = fs::read_to_string(dir.join("evnotify-list.1")).unwrap();
        assert_eq!(list, ".so man1/evnotify-stat.1\n");
        let stat = fs::read_to_string(dir.join("evnotify-stat.1")).unwrap();
        assert!(stat.contains("evnotify list"), "{stat}");
        assert!(main.contains("insmod rust_evnotify.ko"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
