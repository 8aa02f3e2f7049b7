//! `devaipod completions <shell>` and `devaipod man`: generated from the clap definition,
//! so they always list the commands this binary has.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;

use super::Cli;

/// Writes the completion script for `shell` (bash, zsh, fish, elvish, powershell).
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "devaipod", out);
    Ok(())
}

/// Writes the man page devaipod(1) in roff, every visible subcommand a section of its own.
pub fn man(out: &mut dyn Write) -> Result<()> {
    let cmd = Cli::command();
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        writeln!(out, ".TP\n\\fBdevaipod {}\\fR\n{}", sub.get_name(), roff_text(&about))?;
    }
    page.render_version_section(out)?;
    Ok(())
}

/// Text for a roff paragraph: a leading `.` or `'` would start a request; backslashes escape.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e");
    if s.starts_with('.') || s.starts_with('\'') { format!("\\&{s}") } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible_commands() -> Vec<String> {
        Cli::command().get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name().to_owned()).collect()
    }

    #[test]
    fn completions_mention_every_command() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            for name in visible_commands() {
                assert!(text.contains(&name), "{shell:?} completions lack `{name}`");
            }
        }
    }

    #[test]
    fn the_man_page_mentions_every_command() {
        let mut out = Vec::new();
        man(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH devaipod"), "{}", &text[..200.min(text.len())]);
        for name in visible_commands() {
            assert!(text.contains(&format!("\\fBdevaipod {name}\\fR")), "man page lacks `{name}`");
        }
        for name in ["ssh-config", "attach", "forward", "completions"] {
            assert!(visible_commands().iter().any(|c| c == name), "no command {name}");
        }
    }
}
