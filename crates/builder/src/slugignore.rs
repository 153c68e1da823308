//! `.slugignore` (Heroku's format, which is `.gitignore`'s without negation): what the copy of
//! the source into the build leaves out.
//!
//! The patterns are the pusher's, matched on the server against every path of the tree, so the
//! matcher must not backtrack exponentially (`*a*a*a*a*a*a*a*a*a*b` against a 40-character name
//! took 6.9 s of a naive recursive matcher, three times more per extra star). Both levels use
//! the greedy star-backtrack algorithm: on a mismatch only the most recent star (or `**`) takes
//! one more character (component), so a match costs O(pattern × name) steps at worst. On top
//! of that the file is bounded ([`MAX_PATTERNS`], [`MAX_PATTERN_BYTES`]) and every match counts
//! its steps against a budget for the whole copy ([`MATCH_BUDGET`]).

use std::path::{Component, Path};

/// Patterns a `.slugignore` may have.
pub const MAX_PATTERNS: usize = 1000;
/// Longest pattern (bytes).
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Matching steps one copy of the source may take in all (a step is one character compared):
/// about a second of CPU. Ordinary patterns over 100,000 files take a few million.
pub const MATCH_BUDGET: u64 = 1_000_000_000;

/// The patterns of a `.slugignore`.
#[derive(Debug)]
pub struct SlugIgnore {
    patterns: Vec<Pattern>,
    /// Steps taken by matches so far, and how many they may take (see [`MATCH_BUDGET`]).
    steps: std::cell::Cell<u64>,
    budget: u64,
}

impl Default for SlugIgnore {
    fn default() -> Self {
        SlugIgnore {
            patterns: Vec::new(),
            steps: Default::default(),
            budget: MATCH_BUDGET,
        }
    }
}

#[derive(Debug)]
struct Pattern {
    /// Path components to match (globs each; `**` is any number of components); anchored
    /// patterns match from the root.
    parts: Vec<Part>,
    anchored: bool,
    dir_only: bool,
}

#[derive(Debug)]
enum Part {
    AnyDepth,
    Glob(Vec<Tok>),
}

/// One element of a component glob.
#[derive(Debug, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
    /// `[…]`: ranges (a single character is a range of one), negated with `!` or `^`.
    Class {
        neg: bool,
        ranges: Vec<(char, char)>,
    },
}

impl SlugIgnore {
    /// Parses the file's text: one pattern per line, `#` comments, blank lines ignored. Lines
    /// with `..` components are dropped: a pattern only ever matches paths inside the tree.
    /// Refuses more than [`MAX_PATTERNS`] patterns or one longer than [`MAX_PATTERN_BYTES`].
    pub(crate) fn parse(text: &str) -> Result<SlugIgnore, String> {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            if line.len() > MAX_PATTERN_BYTES {
                return Err(format!(
                    ".slugignore has a pattern longer than {MAX_PATTERN_BYTES} bytes ({}…)",
                    line.chars().take(40).collect::<String>()
                ));
            }
            if patterns.len() == MAX_PATTERNS {
                return Err(format!(
                    ".slugignore has more than {MAX_PATTERNS} patterns: ignore whole \
                     directories instead of single files"
                ));
            }
            let dir_only = line.ends_with('/');
            let body = line.trim_end_matches('/');
            let anchored = body.starts_with('/') || body.contains('/');
            let raw: Vec<&str> = body
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .collect();
            if raw.is_empty() || raw.contains(&"..") {
                continue;
            }
            let parts = raw
                .into_iter()
                .map(|p| match p {
                    "**" => Part::AnyDepth,
                    p => Part::Glob(compile(p)),
                })
                .collect();
            patterns.push(Pattern {
                parts,
                anchored,
                dir_only,
            });
        }
        Ok(SlugIgnore {
            patterns,
            ..Default::default()
        })
    }

    /// Whether `rel` (a path relative to the tree's root) is ignored; Err once the matches of
    /// this `.slugignore` took more than [`MATCH_BUDGET`] steps in all.
    pub(crate) fn matches(&self, rel: &Path, is_dir: bool) -> Result<bool, String> {
        let parts: Vec<Vec<char>> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => s.to_str().map(|s| s.chars().collect()),
                _ => None,
            })
            .collect();
        let mut steps = self.steps.get();
        let mut hit = false;
        for p in &self.patterns {
            if p.dir_only && !is_dir {
                continue;
            }
            hit = if p.anchored {
                match_parts(&p.parts, &parts, &mut steps)
            } else {
                match (&p.parts[0], parts.last()) {
                    (Part::Glob(g), Some(name)) => glob_toks(g, name, &mut steps),
                    (Part::AnyDepth, Some(_)) => true,
                    (_, None) => false,
                }
            };
            if hit || steps > self.budget {
                break;
            }
        }
        self.steps.set(steps);
        if steps > self.budget {
            return Err(format!(
                "matching the .slugignore patterns took more than {} steps: simplify them \
                 (fewer `*` in one pattern, or ignore whole directories)",
                self.budget
            ));
        }
        Ok(hit)
    }

    /// Matching steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps.get()
    }
}

fn compile(pat: &str) -> Vec<Tok> {
    let p: Vec<char> = pat.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' => {
                // `**` inside a component is one star: both match any run of characters.
                if out.last() != Some(&Tok::Star) {
                    out.push(Tok::Star);
                }
            }
            '?' => out.push(Tok::Any),
            '[' => match p[i + 1..].iter().position(|c| *c == ']') {
                // No closing bracket: a literal `[`.
                None => out.push(Tok::Lit('[')),
                Some(end) => {
                    let class = &p[i + 1..i + 1 + end];
                    let (neg, class) = match class.split_first() {
                        Some(('!' | '^', c)) => (true, c),
                        _ => (false, class),
                    };
                    let mut ranges = Vec::new();
                    let mut j = 0;
                    while j < class.len() {
                        if j + 2 < class.len() && class[j + 1] == '-' {
                            ranges.push((class[j], class[j + 2]));
                            j += 3;
                        } else {
                            ranges.push((class[j], class[j]));
                            j += 1;
                        }
                    }
                    out.push(Tok::Class { neg, ranges });
                    i += end + 1;
                }
            },
            c => out.push(Tok::Lit(c)),
        }
        i += 1;
    }
    out
}

/// Whether one token that is not a star matches `c`.
fn one(t: &Tok, c: char) -> bool {
    match t {
        Tok::Any => true,
        Tok::Lit(l) => *l == c,
        Tok::Class { neg, ranges } => ranges.iter().any(|(a, b)| *a <= c && c <= *b) != *neg,
        Tok::Star => false,
    }
}

/// The greedy star-backtrack match of one component: O(pattern × name) steps at worst.
fn glob_toks(pat: &[Tok], name: &[char], steps: &mut u64) -> bool {
    let (mut p, mut n) = (0, 0);
    // After the most recent star: (the token after it, the name position it resumes at).
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        *steps += 1;
        match pat.get(p) {
            Some(Tok::Star) => {
                star = Some((p + 1, n));
                p += 1;
                continue;
            }
            Some(t) if one(t, name[n]) => {
                p += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        // A mismatch: the last star takes one more character, or there is no match.
        match star {
            Some((sp, sn)) => {
                star = Some((sp, sn + 1));
                p = sp;
                n = sn + 1;
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|t| *t == Tok::Star)
}

/// Shell-style glob of one path component: `*`, `?` and `[...]` classes.
pub fn glob(pat: &str, name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    glob_toks(&compile(pat), &name, &mut 0)
}

/// The same algorithm one level up: components against pattern parts, `**` the star.
fn match_parts(pat: &[Part], path: &[Vec<char>], steps: &mut u64) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < path.len() {
        *steps += 1;
        match pat.get(p) {
            Some(Part::AnyDepth) => {
                star = Some((p + 1, n));
                p += 1;
                continue;
            }
            Some(Part::Glob(g)) if glob_toks(g, &path[n], steps) => {
                p += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sn)) => {
                star = Some((sp, sn + 1));
                p = sp;
                n = sn + 1;
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|t| matches!(t, Part::AnyDepth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugignore_patterns() {
        let ig = SlugIgnore::parse(
            "# c\n*.psd\n/docs\ntmp/*.log\nspec/\n../x\n/a/../b\n**/cache\nlib/**/x\n",
        )
        .unwrap();
        let m = |p: &str, dir: bool| ig.matches(Path::new(p), dir).unwrap();
        assert!(m("a.psd", false) && m("x/y/b.psd", false));
        assert!(m("docs", true) && !m("lib/docs", true));
        assert!(m("tmp/a.log", false) && !m("tmp/sub/a.log", false) && !m("a.log", false));
        assert!(m("spec", true) && !m("spec", false));
        assert!(m("cache", true) && m("x/y/cache", false));
        assert!(m("lib/x", false) && m("lib/a/b/x", false) && !m("lib/a/y", false));
        assert!(
            !m("x", false) && !m("b", false),
            "patterns with .. match nothing"
        );
        assert!(glob("[a-c]?.txt", "b1.txt") && !glob("[!a-c]?.txt", "b1.txt"));
        assert!(glob("*", "") && glob("a*", "a") && glob("*a*b*", "xaybz"));
        assert!(!glob("a*b", "acbd") && glob("a*b*", "acbd") && glob("[x", "[x"));
        assert!(glob("*.tar.gz", "a.b.tar.gz") && !glob("*.tar.gz", "a.tar.gzz"));
    }

    /// Steps of matching `pat` against `name` with the matcher used for `.slugignore`.
    fn steps_of(pat: &str, name: &str) -> (bool, u64) {
        let ig = SlugIgnore::parse(pat).unwrap();
        let hit = ig.matches(Path::new(name), false).unwrap();
        (hit, ig.steps())
    }

    #[test]
    fn stars_cost_at_most_pattern_times_name_steps() {
        // The review's pattern: exponential for a backtracking matcher (6.9 s), and three
        // times more per extra star.
        let name = "a".repeat(40);
        for stars in [9, 15, 30] {
            let pat = format!("{}b", "*a".repeat(stars));
            let (hit, steps) = steps_of(&pat, &name);
            assert!(!hit);
            let bound = (pat.len() as u64 + 1) * (name.len() as u64 + 1);
            assert!(steps <= bound, "{stars} stars: {steps} steps > {bound}");
        }
        // The same at the component level, with `**`.
        let path = vec!["a"; 200].join("/");
        let pat = format!("{}b", "**/a/".repeat(20));
        let (hit, steps) = steps_of(&pat, &path);
        assert!(!hit);
        assert!(steps < 200 * 45 * 4, "{steps}");
    }

    #[test]
    fn big_files_and_long_patterns_are_refused_and_the_budget_ends_a_match() {
        let many = "x\n".repeat(MAX_PATTERNS + 1);
        let e = SlugIgnore::parse(&many).unwrap_err();
        assert!(e.contains("more than 1000 patterns"), "{e}");
        let long = "*".repeat(MAX_PATTERN_BYTES + 1);
        let e = SlugIgnore::parse(&long).unwrap_err();
        assert!(e.contains("longer than 1024 bytes"), "{e}");
        // The worst a pattern can do is pattern × name steps per path; the budget ends it.
        let worst = format!("{}b\n", "*a".repeat(500));
        let mut ig = SlugIgnore::parse(&worst.repeat(MAX_PATTERNS)).unwrap();
        ig.budget = 10_000_000;
        let name = "a".repeat(255);
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = ig.matches(Path::new(&name), false) {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("the budget ran out");
        assert!(e.contains("simplify them"), "{e}");
        assert!(ig.steps() <= 10_000_000 + 2 * 1001 * 256);
    }
}
