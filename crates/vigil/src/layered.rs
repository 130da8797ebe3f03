//! Options written once: [`options!`] turns one declaration of a group of options into their
//! flags, `VIGIL_*` variables, defaults and help (a clap struct), their `vigil.toml` keys, and
//! the layering defaults < file < environment < flags.
//!
//! clap already merges flags, environment variables (including those a `.env` file set) and
//! defaults; [`ArgMatches::value_source`] tells which of the three a value came from. The file
//! slots in between: a file value replaces a clap *default*, never a value the user gave as a
//! flag or variable. [`crate::config`] declares the `serve` options with it, [`crate::args`] the
//! NATS connection options `serve` shares with other commands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::ArgMatches;
use clap::parser::ValueSource;

/// Declares a group of options once. Each field is written as for `#[derive(clap::Args)]`: its
/// doc comment is the help, its `#[arg(...)]` the flag, variable and default; its name is the
/// key in `vigil.toml`. This generates:
///
/// - the clap struct `$name` (also the effective values once layered);
/// - `$file`, the keys of the group a configuration file set, each `None` when absent;
///   `$file::take` checks and takes them out of a parsed file;
/// - `$name::layer`, which applies a file under the flags and variables, and
///   `$name::write_toml`, which writes the values back as `vigil.toml` keys.
///
/// After the options, `flatten field: Group, file GroupFile,` embeds another group whose keys
/// sit at the same level of the file, and `section field: Group, file GroupFile,` one whose keys
/// sit in the table `[field]`.
macro_rules! options {
    (
        $(#[$meta:meta])*
        pub struct $name:ident, file $file:ident {
            $(
                $(#[$opt_meta:meta])+
                pub $opt:ident: $ty:ty,
            )*
            $( flatten $group:ident: $group_ty:ty, file $group_file:ty, )*
            $( section $section:ident: $section_ty:ty, file $section_file:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, clap::Args)]
        pub struct $name {
            $( $(#[$opt_meta])+ pub $opt: $ty, )*
            $( #[command(flatten)] pub $group: $group_ty, )*
            $( #[command(flatten)] pub $section: $section_ty, )*
        }

        #[doc = concat!("The keys of [`", stringify!($name), "`] a configuration file set.")]
        #[derive(Debug, Default, Clone, PartialEq)]
        pub struct $file {
            $( pub $opt: Option<$ty>, )*
            $( pub $group: $group_file, )*
            $( pub $section: $section_file, )*
        }

        impl $file {
            /// Checks and takes this group's keys out of `table`; `prefix` is where the table
            /// sits in the file (`limits.`), for error messages.
            pub fn take(table: &mut toml::Table, prefix: &str) -> anyhow::Result<Self> {
                Ok(Self {
                    $( $opt: $crate::layered::take(table, prefix, stringify!($opt))?, )*
                    $( $group: <$group_file>::take(table, prefix)?, )*
                    $( $section: $crate::layered::take_section(
                        table,
                        prefix,
                        stringify!($section),
                        <$section_file>::take,
                    )?, )*
                })
            }
        }

        impl $name {
            /// Sets every option `file` gives unless a flag or variable gave it (`matches` are
            /// the command's).
            pub fn layer(&mut self, file: $file, matches: &clap::ArgMatches) {
                $(
                    if let Some(value) = file.$opt
                        && !$crate::layered::explicit(matches, stringify!($opt))
                    {
                        self.$opt = value;
                    }
                )*
                $( self.$group.layer(file.$group, matches); )*
                $( self.$section.layer(file.$section, matches); )*
            }

            /// Writes the options into `table` as `vigil.toml` keys (unset ones are left out).
            pub fn write_toml(&self, table: &mut toml::Table) -> anyhow::Result<()> {
                $(
                    if let Some(value) = $crate::layered::FileValue::to_toml(&self.$opt)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", stringify!($opt)))?
                    {
                        table.insert(stringify!($opt).to_owned(), value);
                    }
                )*
                $( self.$group.write_toml(table)?; )*
                $(
                    let mut section = toml::Table::new();
                    self.$section.write_toml(&mut section)?;
                    table.insert(stringify!($section).to_owned(), section.into());
                )*
                Ok(())
            }
        }
    };
}
pub(crate) use options;

/// True when the user gave `id` as a flag or a variable (not a clap default).
pub fn explicit(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Takes `key` out of `table` as a `T`; an error names the key and the value.
pub fn take<T: FileValue>(
    table: &mut toml::Table,
    prefix: &str,
    key: &str,
) -> anyhow::Result<Option<T>> {
    table
        .remove(key)
        .map(|value| T::from_toml(value).map_err(|e| anyhow::anyhow!("{prefix}{key}: {e}")))
        .transpose()
}

/// Takes the table `[key]` out of `table` and hands it to `take`; keys no option of the section
/// takes are errors.
pub fn take_section<T: Default>(
    table: &mut toml::Table,
    prefix: &str,
    key: &str,
    take: impl FnOnce(&mut toml::Table, &str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let prefix = format!("{prefix}{key}.");
    match table.remove(key) {
        None => Ok(T::default()),
        Some(toml::Value::Table(mut section)) => {
            let taken = take(&mut section, &prefix)?;
            refuse_unknown(&section, &prefix)?;
            Ok(taken)
        }
        Some(other) => bail!("{key} must be a table, not {other}"),
    }
}

/// Keys still in `table` once every option took its own belong to no option: a typo must not
/// silently leave a limit at its default.
pub fn refuse_unknown(table: &toml::Table, prefix: &str) -> anyhow::Result<()> {
    match table.keys().next() {
        Some(key) => bail!("unknown key `{prefix}{key}`"),
        None => Ok(()),
    }
}

/// A type an option may have: read from and written to `vigil.toml`.
pub trait FileValue: Sized {
    fn from_toml(value: toml::Value) -> Result<Self, String>;
    /// `None` leaves the key out (an unset optional value).
    fn to_toml(&self) -> Result<Option<toml::Value>, String>;
}

/// `FileValue` through the types' own serde implementations.
macro_rules! file_value_via_serde {
    ($($ty:ty),* $(,)?) => {$(
        impl $crate::layered::FileValue for $ty {
            fn from_toml(value: toml::Value) -> Result<Self, String> {
                value.try_into().map_err(|e: toml::de::Error| e.to_string().trim_end().to_owned())
            }

            fn to_toml(&self) -> Result<Option<toml::Value>, String> {
                toml::Value::try_from(self).map(Some).map_err(|e| e.to_string())
            }
        }
    )*};
}
pub(crate) use file_value_via_serde;

file_value_via_serde!(String, PathBuf, usize, u32, u64, f64, bool);

/// Durations are written in humantime syntax: `30s`, `15m`, `1h 30m`.
impl FileValue for Duration {
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        let text = String::from_toml(value)?;
        humantime::parse_duration(&text).map_err(|e| format!("invalid duration {text:?}: {e}"))
    }

    fn to_toml(&self) -> Result<Option<toml::Value>, String> {
        Ok(Some(humantime::format_duration(*self).to_string().into()))
    }
}

impl<T: FileValue> FileValue for Option<T> {
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        T::from_toml(value).map(Some)
    }

    fn to_toml(&self) -> Result<Option<toml::Value>, String> {
        self.as_ref().map_or(Ok(None), T::to_toml)
    }
}

impl<T: FileValue> FileValue for Vec<T> {
    fn from_toml(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Array(items) => items.into_iter().map(T::from_toml).collect(),
            other => Err(format!("expected an array, not {other}")),
        }
    }

    fn to_toml(&self) -> Result<Option<toml::Value>, String> {
        let mut items = Vec::with_capacity(self.len());
        for item in self {
            items.extend(item.to_toml()?);
        }
        Ok(Some(toml::Value::Array(items)))
    }
}
