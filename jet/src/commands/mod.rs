//! One module per subcommand.

pub mod bench;
pub mod bootstrap;
pub mod chaos;
pub mod dev;
pub mod explain;
pub mod migrate;
pub mod openapi;
pub mod status;
pub mod test;

/// The value after `flag` in `args`, if present.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> anyhow::Result<Option<&'a str>> {
    match args.iter().position(|a| a == flag) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .map(|v| Some(v.as_str()))
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value")),
    }
}
