//! Output helpers shared by the commands: borderless tables that read well and pipe well,
//! `--json`, relative times, and confirmation prompts that refuse to guess when nobody is at
//! the terminal.

use anyhow::{Result, bail};
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use slipway_types::Timestamp;
use std::io::{BufRead, IsTerminal, Write};

/// A table with a header row and columns separated by three spaces, no borders, no wrapping
/// (so `grep`/`awk` work on it), and no trailing blanks.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(headers.iter().copied());
    for row in rows {
        t.add_row(row);
    }
    for col in t.column_iter_mut() {
        col.set_padding((0, 3));
    }
    let mut out = String::new();
    for line in t.to_string().lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", table(headers, rows));
}

/// Pretty JSON on stdout, for `--json`.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// "5 minutes ago", as Flynn's lists show times.
pub fn ago(t: &Timestamp) -> String {
    ago_between(t, &Timestamp::now())
}

fn ago_between(t: &Timestamp, now: &Timestamp) -> String {
    let secs = (now.unix_millis() - t.unix_millis()) / 1000;
    if secs < 0 {
        return "in the future".into();
    }
    let plural = |n: i128, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        0..=4 => "just now".into(),
        5..=59 => plural(secs, "second"),
        60..=3599 => plural(secs / 60, "minute"),
        3600..=86_399 => plural(secs / 3600, "hour"),
        _ => plural(secs / 86_400, "day"),
    }
}

/// Asks a yes/no question on stderr. `-y` skips it; without a terminal to ask on it is an
/// error telling to use `-y`, so scripts never hang or act on a guess.
pub fn confirm(question: &str, yes: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    require_terminal()?;
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let answer = read_line()?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Asks the user to type `expected` (for deleting an app). Same `-y`/terminal rules as
/// [`confirm`].
pub fn confirm_by_typing(prompt: &str, expected: &str, yes: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    require_terminal()?;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    Ok(read_line()?.trim() == expected)
}

fn require_terminal() -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("confirmation needed but stdin is not a terminal: use -y to confirm");
    }
    Ok(())
}

fn read_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_no_borders_or_trailing_blanks() {
        let out = table(
            &["ID", "NAME"],
            vec![
                vec!["1".into(), "short".into()],
                vec!["22".into(), "a-longer-name".into()],
            ],
        );
        assert_eq!(out, "ID   NAME\n1    short\n22   a-longer-name\n");
    }

    #[test]
    fn relative_times() {
        let now = Timestamp::parse("2026-01-02T00:00:00Z").unwrap();
        let at = |s: &str| ago_between(&Timestamp::parse(s).unwrap(), &now);
        assert_eq!(at("2026-01-02T00:00:00Z"), "just now");
        assert_eq!(at("2026-01-01T23:59:30Z"), "30 seconds ago");
        assert_eq!(at("2026-01-01T23:59:00Z"), "1 minute ago");
        assert_eq!(at("2026-01-01T21:00:00Z"), "3 hours ago");
        assert_eq!(at("2025-12-30T00:00:00Z"), "3 days ago");
        assert_eq!(at("2026-01-03T00:00:00Z"), "in the future");
    }
}
