//! A small command-line parser shared by the examples: `--name value` options, `--flag`
//! switches, `--help`, and an error for anything left over.

use std::str::FromStr;

/// The command-line arguments not consumed yet.
pub struct Args {
    rest: Vec<String>,
}

impl Args {
    /// The process's arguments, without the program name.
    pub fn from_env() -> Self {
        Args {
            rest: std::env::args().skip(1).collect(),
        }
    }

    /// Removes `--name` and returns whether it was there.
    pub fn flag(&mut self, name: &str) -> bool {
        match self.rest.iter().position(|a| a == name) {
            Some(i) => {
                self.rest.remove(i);
                true
            }
            None => false,
        }
    }

    /// Removes `--name VALUE` (or `--name=VALUE`) and parses the value.
    ///
    /// # Errors
    /// A message naming the option when the value is missing or does not parse.
    pub fn value<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        let prefix = format!("{name}=");
        let Some(i) = self
            .rest
            .iter()
            .position(|a| a == name || a.starts_with(&prefix))
        else {
            return Ok(None);
        };
        let arg = self.rest.remove(i);
        let raw = match arg.strip_prefix(&prefix) {
            Some(v) => v.to_string(),
            None => {
                if i >= self.rest.len() {
                    return Err(format!("{name} needs a value"));
                }
                self.rest.remove(i)
            }
        };
        raw.parse::<T>()
            .map(Some)
            .map_err(|e| format!("{name} {raw:?}: {e}"))
    }

    /// Fails if any argument was not recognised.
    ///
    /// # Errors
    /// A message listing the unrecognised arguments.
    pub fn finish(self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "unrecognised argument(s): {} (try --help)",
                self.rest.join(" ")
            ))
        }
    }
}
