//! What the doctor reads from the process: environment variables, the home directory, the clock and
//! whether stdout is a terminal. Injected so tests can run against fixtures.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::SystemTime;

/// The process surroundings the doctor depends on. Files are read from the real file system, at
/// paths derived from these values.
pub trait Environment {
    /// The value of environment variable `name`, or `None` when it is not set (an empty value is
    /// `Some("")`: botocore treats set-but-empty differently from unset in places).
    fn var(&self, name: &str) -> Option<String>;
    /// The user's home directory, used for `~` in paths.
    fn home_dir(&self) -> Option<PathBuf>;
    /// The current time (for expiry checks).
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    /// True when the report goes to a terminal (colours are used then, unless `NO_COLOR` is set).
    fn stdout_is_terminal(&self) -> bool {
        false
    }
}

/// The real process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemEnvironment;

impl Environment for SystemEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }

    fn home_dir(&self) -> Option<PathBuf> {
        self.var("HOME")
            .filter(|h| !h.is_empty())
            .or_else(|| self.var("USERPROFILE"))
            .map(PathBuf::from)
    }

    fn stdout_is_terminal(&self) -> bool {
        std::io::stdout().is_terminal()
    }
}

/// Python's `os.path.expanduser(os.path.expandvars(p))` as botocore applies it to file paths.
pub(crate) fn expand_path(p: &str, env: &dyn Environment) -> PathBuf {
    let vars = expand_vars(p, env);
    if vars == "~" || vars.starts_with("~/") {
        if let Some(home) = env.home_dir() {
            return home.join(vars.trim_start_matches('~').trim_start_matches('/'));
        }
    }
    PathBuf::from(vars)
}

/// `os.path.expandvars`: `$NAME` and `${NAME}` are replaced when set, left as written otherwise.
fn expand_vars(p: &str, env: &dyn Environment) -> String {
    let mut out = String::new();
    let mut rest = p;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, consumed) = if let Some(b) = after.strip_prefix('{') {
            match b.find('}') {
                Some(j) => (&b[..j], j + 2),
                None => ("", 0),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        match (name.is_empty(), env.var(name)) {
            (false, Some(v)) => {
                out.push_str(&v);
                rest = &after[consumed..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E;
    impl Environment for E {
        fn var(&self, n: &str) -> Option<String> {
            (n == "X").then(|| "ex".to_string())
        }
        fn home_dir(&self) -> Option<PathBuf> {
            Some("/h".into())
        }
    }

    #[test]
    fn expands_like_python() {
        assert_eq!(
            expand_path("~/a/$X/${X}/$Y", &E),
            PathBuf::from("/h/a/ex/ex/$Y")
        );
        assert_eq!(expand_path("/p/${nope", &E), PathBuf::from("/p/${nope"));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    struct Env(Vec<(String, String)>);
    impl Environment for Env {
        fn var(&self, n: &str) -> Option<String> {
            self.0.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        }
        fn home_dir(&self) -> Option<PathBuf> {
            Some(PathBuf::from("/home/u"))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any path expands without panicking; text without `$` or a leading `~` is left alone.
        #[test]
        fn expansion_never_panics(p in "[~${}/a-zA-Z_0-9.]{0,30}", vars in prop::collection::vec(("[A-Z_]{1,4}", "[a-z/]{0,6}"), 0..4)) {
            let env = Env(vars);
            let out = expand_path(&p, &env);
            if !p.contains('$') && !p.starts_with('~') {
                prop_assert_eq!(out, PathBuf::from(&p));
            }
        }

        /// `$NAME` and `${NAME}` of a set variable become its value.
        #[test]
        fn set_variables_are_replaced(name in "[A-Z][A-Z_]{0,5}", value in "[a-z0-9/]{0,10}", braces in any::<bool>()) {
            let env = Env(vec![(name.clone(), value.clone())]);
            let p = if braces { format!("/x/${{{name}}}/y") } else { format!("/x/${name}/y") };
            prop_assert_eq!(expand_path(&p, &env), PathBuf::from(format!("/x/{value}/y")));
        }
    }
}
