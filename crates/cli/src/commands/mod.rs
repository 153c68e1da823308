//! One module per command group, each with its clap arguments and what it does.

pub mod apps;
pub mod backup;
pub mod build;
pub mod cluster;
pub mod env;
pub mod export;
pub mod hosts;
pub mod image;
pub mod jobs;
pub mod limit;
pub mod log;
pub mod meta;
pub mod release;
pub mod route;
pub mod run;
pub mod top;

use anyhow::{Result, bail};

/// Parses `KEY=VALUE` arguments (env, meta). The value may contain `=` and be empty; the key
/// may not.
pub fn parse_pairs(args: &[String]) -> Result<Vec<(String, String)>> {
    args.iter()
        .map(|arg| match arg.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid argument {arg:?}: expected KEY=VALUE"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        let args = vec!["A=1".to_string(), "B=x=y".into(), "C=".into()];
        assert_eq!(
            parse_pairs(&args).unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), "".into())
            ]
        );
        for bad in ["A", "=1", ""] {
            let err = parse_pairs(&[bad.to_string()]).unwrap_err().to_string();
            assert_eq!(err, format!("invalid argument {bad:?}: expected KEY=VALUE"));
        }
    }
}
