//! `sage completions SHELL` and `sage man`: what a shell and `man` need,
//! made from the same clap definition that parses the arguments, so they
//! cannot drift from the options.

use std::path::PathBuf;

use clap::CommandFactory;

use crate::failure::{CmdResult, Failure};
use crate::output::out_part;

/// `sage completions SHELL`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for, on stdout (e.g.
    /// `sage completions bash > /etc/bash_completion.d/sage`).
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `sage man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `sage.1` and one page per subcommand (`sage-delegate.1`...)
    /// into this directory instead of printing `sage.1` on stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// Prints the completion script of `C`'s command line for a shell.
pub fn completions<C: CommandFactory>(args: CompletionsArgs) -> CmdResult {
    let mut command = C::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "sage", &mut script);
    out_part!("{}", String::from_utf8_lossy(&script));
    Ok(())
}

/// Prints `sage(1)`, or writes every page into a directory.
pub fn man<C: CommandFactory>(args: ManArgs) -> CmdResult {
    let command = C::command();
    match args.out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| Failure::Failed(format!("cannot render the man page: {e}")))?;
            out_part!("{}", String::from_utf8_lossy(&page));
            Ok(())
        }
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Failure::Usage(format!(
                    "--out-dir {} is not a directory",
                    dir.display()
                )));
            }
            clap_mangen::generate_to(command, &dir).map_err(|e| {
                Failure::Failed(format!(
                    "cannot write the man pages into {}: {e}",
                    dir.display()
                ))
            })
        }
    }
}
