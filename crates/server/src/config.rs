//! Layered node configuration (architecture.md §2 "CLI / config"):
//! defaults < TOML file < `SYNOD_*` environment < flags.
//!
//! A later layer overrides an earlier one key by key, so a flag always wins
//! over the file (etcd's "the config file silently ignores flags" trap is
//! exactly what this order avoids). Unknown keys are errors in every layer
//! (`NodeConfig` is `deny_unknown_fields`): the error names the key and the
//! file or environment variable it came from.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Serialize;
use std::path::{Path, PathBuf};
use synod_runtime::NodeConfig;

/// Prefix of the environment variables that override config keys. Nested
/// keys use a double underscore: `SYNOD_PROTOCOL__TICK_MS=2` sets
/// `protocol.tick_ms`.
pub const ENV_PREFIX: &str = "SYNOD_";

/// `SYNOD_*` variables that belong to the command line, not to
/// `NodeConfig`; the config layer skips them so they are not reported as
/// unknown keys (`SYNOD_FAILPOINT` is read by the storage crate,
/// `SYNOD_FAILPOINT_HTTP` by the runtime's test-only failpoint endpoint).
/// Variables of the test setup avoid the prefix (`TANSU_BIN`,
/// `REQUIRE_TANSU`). Lower-case,
/// without the prefix, as figment sees them.
pub const ENV_NOT_CONFIG: &[&str] = &[
    "config",
    "endpoints",
    "log_format",
    "failpoint",
    "failpoint_http",
    "test_release_before_fsync",
];

/// The flag layer: the command-line overrides of `server` and
/// `config show`. `None` leaves the lower layers' value.
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct ConfigFlags {
    /// Node config file (TOML). Optional: defaults, `SYNOD_*` variables
    /// and flags can make a complete config on their own.
    #[arg(long, short = 'c', value_name = "FILE", env = "SYNOD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This replica's id (overrides `id`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    /// Where this replica keeps its WAL and snapshots (overrides
    /// `data_dir`).
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Cluster identity (overrides `cluster_id`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<u64>,
    /// Join a running cluster as a new member (sets `join = true`): wait
    /// for `synod member add`, then catch up from a member's snapshot.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub join: bool,
}

/// The layers, in order, for `flags`.
pub fn figment(flags: &ConfigFlags) -> Result<Figment, String> {
    let mut f = Figment::from(Serialized::defaults(NodeConfig::default()));
    if let Some(path) = &flags.config {
        // figment skips a missing file silently; a file named on the
        // command line must exist.
        if !path.is_file() {
            return Err(format!("config file {} not found", path.display()));
        }
        f = f.merge(Toml::file(path));
    }
    Ok(
        f.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(ENV_NOT_CONFIG))
            .merge(Serialized::defaults(flags)),
    )
}

/// The effective config for `flags`, not yet validated.
pub fn load(flags: &ConfigFlags) -> Result<NodeConfig, String> {
    figment(flags)?
        .extract::<NodeConfig>()
        .map_err(|e| format!("config: {e}"))
}

/// `cfg` as TOML, as `synod config show` prints it and as `synod up` writes
/// its per-node files.
pub fn to_toml(cfg: &NodeConfig) -> String {
    toml::to_string_pretty(cfg).expect("NodeConfig always serialises to TOML")
}

/// The path of the bundled example config, for tests.
pub fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/synod.example.toml")
}

#[cfg(test)]
// `Jail::expect_with` fixes the closures' error type to `figment::Error`;
// its size is figment's choice, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn flags(config: Option<&str>) -> ConfigFlags {
        ConfigFlags {
            config: config.map(PathBuf::from),
            ..ConfigFlags::default()
        }
    }

    /// Three members on loopback, tick 7 ms, data in /file.
    const FILE: &str = r#"
        id = 1
        data_dir = "/file"
        [protocol]
        tick_ms = 7
        [[members]]
        id = 0
        peer_addr = "127.0.0.1:7100"
        api_addr = "127.0.0.1:7000"
        [[members]]
        id = 1
        peer_addr = "127.0.0.1:7101"
        api_addr = "127.0.0.1:7001"
        [[members]]
        id = 2
        peer_addr = "127.0.0.1:7102"
        api_addr = "127.0.0.1:7002"
    "#;

    #[test]
    fn layering_defaults_file_env_flags() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", FILE)?;
            // File over defaults.
            let c = load(&flags(Some("node.toml"))).unwrap();
            assert_eq!((c.id, c.protocol.tick_ms), (1, 7));
            assert_eq!(c.data_dir, PathBuf::from("/file"));
            assert_eq!(c.protocol.batch_size_max, 64, "default kept");
            assert_eq!(c.members.len(), 3);
            c.validate().unwrap();

            // Environment over the file, nested keys with `__`; the
            // command line's own variables are not config keys.
            jail.set_env("SYNOD_PROTOCOL__TICK_MS", 2);
            jail.set_env("SYNOD_ID", 2);
            jail.set_env("SYNOD_DATA_DIR", "/env");
            jail.set_env("SYNOD_ENDPOINTS", "127.0.0.1:7000");
            let c = load(&flags(Some("node.toml"))).unwrap();
            assert_eq!((c.id, c.protocol.tick_ms), (2, 2));
            assert_eq!(c.data_dir, PathBuf::from("/env"));

            // Flags over the environment.
            let f = ConfigFlags {
                id: Some(0),
                data_dir: Some("/flag".into()),
                cluster_id: Some(9),
                ..flags(Some("node.toml"))
            };
            let c = load(&f).unwrap();
            assert_eq!((c.id, c.cluster_id), (0, 9));
            assert_eq!(c.data_dir, PathBuf::from("/flag"));
            assert_eq!(c.protocol.tick_ms, 2, "env value kept where no flag");
            assert!(!c.join, "join defaults to false");
            let c = load(&ConfigFlags {
                join: true,
                ..flags(Some("node.toml"))
            })
            .unwrap();
            assert!(c.join, "--join sets join");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "[protocol]\ntick_msec = 3\n")?;
            let e = load(&flags(Some("node.toml"))).unwrap_err();
            assert!(e.contains("tick_msec"), "{e}");
            assert!(e.contains("node.toml"), "{e}");

            jail.create_file("top.toml", "idd = 3\n")?;
            let e = load(&flags(Some("top.toml"))).unwrap_err();
            assert!(e.contains("idd"), "{e}");

            jail.set_env("SYNOD_PROTOCOL__TICKS", 3);
            let e = load(&flags(None)).unwrap_err();
            assert!(e.contains("ticks"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_and_bad_values_are_errors() {
        Jail::expect_with(|jail| {
            let e = load(&flags(Some("nope.toml"))).unwrap_err();
            assert!(e.contains("nope.toml"), "{e}");
            jail.create_file("bad.toml", "[protocol]\ntick_ms = \"fast\"\n")?;
            let e = load(&flags(Some("bad.toml"))).unwrap_err();
            assert!(e.contains("tick_ms"), "{e}");
            Ok(())
        });
    }

    /// The example in `config/` parses through the same layers and is a
    /// valid config, so it cannot rot.
    #[test]
    fn example_config_is_valid() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let path = example_path();
            let c = load(&flags(Some(path.to_str().unwrap()))).unwrap();
            c.validate().unwrap();
            assert_eq!(c.members.len(), 3);
            // Every field is spelled out, with its default value (apart
            // from the example's own id, data_dir and members).
            let text = std::fs::read_to_string(&path).unwrap();
            let d = NodeConfig {
                id: c.id,
                data_dir: c.data_dir.clone(),
                members: c.members.clone(),
                ..NodeConfig::default()
            };
            assert_eq!(c, d, "the example shows the defaults");
            for line in to_toml(&d).lines() {
                if let Some((key, _)) = line.split_once(" = ") {
                    assert!(
                        text.contains(&format!("{key} =")),
                        "{key} missing from the example"
                    );
                }
            }
            Ok(())
        });
    }

    #[test]
    fn shown_config_reads_back_the_same() {
        let c = NodeConfig::local(1, 3, Path::new("/tmp/synod"));
        let back: NodeConfig = Figment::from(Toml::string(&to_toml(&c))).extract().unwrap();
        assert_eq!(back, c);
    }
}
