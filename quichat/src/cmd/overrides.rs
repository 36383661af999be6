//! Flags override the TOML configuration key by key: the file is parsed into a table,
//! each flag given on the command line replaces the key of the same name, and the result
//! is deserialized into the library's config type. So every option is both a config key
//! and a flag, and the two can never disagree about names, defaults or validation.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// A TOML table being assembled from a file and flags.
pub struct Overrides {
    table: toml::Table,
}

impl Overrides {
    /// Starts from `file` (or an empty table).
    pub fn from_file(file: Option<&Path>) -> Result<Self> {
        let table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        Ok(Self { table })
    }

    /// Sets `path` (dotted, e.g. `core.address`) to `value` if the flag was given.
    pub fn set<T: Serialize>(&mut self, path: &str, value: Option<&T>) -> Result<()> {
        let Some(value) = value else { return Ok(()) };
        let value = toml::Value::try_from(value).with_context(|| format!("flag for {path}"))?;
        let mut table = &mut self.table;
        let mut keys = path.split('.').peekable();
        while let Some(key) = keys.next() {
            if keys.peek().is_none() {
                table.insert(key.to_string(), value);
                break;
            }
            let entry = table
                .entry(key.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            match entry {
                toml::Value::Table(inner) => table = inner,
                _ => unreachable!("just made a table"),
            }
        }
        Ok(())
    }

    /// Replaces the table at `path` with one key (for one-of tables such as `[auth]`).
    pub fn set_only<T: Serialize>(
        &mut self,
        path: &str,
        key: &str,
        value: Option<&T>,
    ) -> Result<()> {
        if value.is_some() {
            self.table.remove(path);
            self.set(&format!("{path}.{key}"), value)?;
        }
        Ok(())
    }

    /// The assembled configuration as TOML text, for the library's own parser.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(&self.table).context("assembling the configuration")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_replace_file_keys_including_nested_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "lanes = 4\n[core]\naddress = \"a:1\"\nserver_name = \"x\"\n",
        )
        .unwrap();
        let mut o = Overrides::from_file(Some(&file)).unwrap();
        o.set("lanes", Some(&8u8)).unwrap();
        o.set("core.address", Some(&"b:2")).unwrap();
        o.set::<u8>("absent", None).unwrap();
        let t: toml::Table = o.to_toml().unwrap().parse().unwrap();
        assert_eq!(t["lanes"].as_integer(), Some(8));
        assert_eq!(t["core"]["address"].as_str(), Some("b:2"));
        assert_eq!(t["core"]["server_name"].as_str(), Some("x"));
        assert!(!t.contains_key("absent"));
    }
}

#[cfg(test)]
mod example_configs {
    use clap::Parser;

    // The example configurations in docs/config are what operators copy: they must parse,
    // and flags must override them.
    #[test]
    fn the_documented_examples_parse_and_flags_override_them() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config");
        let cli = crate::args::Cli::try_parse_from([
            "quichat",
            "core",
            "--config",
            root.join("core.toml").to_str().unwrap(),
            "--inbox-max",
            "7",
        ])
        .unwrap();
        let crate::args::Command::Core(args) = cli.command else {
            panic!("not core")
        };
        let core = args.config().unwrap();
        assert_eq!(core.inbox_max, 7);
        assert_eq!(core.ttl_secs, 604_800);

        let cli = crate::args::Cli::try_parse_from([
            "quichat",
            "edge",
            "--config",
            root.join("edge.toml").to_str().unwrap(),
            "--core-address",
            "10.0.0.1:7443",
            "--send-per-second",
            "9",
        ])
        .unwrap();
        let crate::args::Command::Edge(args) = cli.command else {
            panic!("not edge")
        };
        let edge = args.config().unwrap();
        assert_eq!(edge.core.address, "10.0.0.1:7443");
        assert_eq!(edge.send_per_second, 9);
        assert_eq!(edge.name, "edge-eu-1");
    }
}
