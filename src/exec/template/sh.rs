//! The POSIX `sh` lexer behind [`super::render_sh`]: it tracks the quoting context each
//! `${NAME}` stands in (bare, `"..."`, `'...'`, `$(...)`, backquotes, here-documents, comments)
//! and writes the value quoted for it, or refers to the environment where it cannot be sure.

use super::{env_name, quote_sh, replace_nul, WakeVars, VAR_NAMES};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Values written into the text, quoted.
    Inline,
    /// Values referenced as `${AGENTCOM_V_NAME}` everywhere (short text; needs the environment).
    EnvRef,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ctx {
    /// Top level, unquoted.
    Bare,
    /// Inside `$(`, with the count of open inner parentheses.
    Sub(u32),
    /// Inside `"`.
    Double,
    /// Inside backticks.
    Backtick,
    /// Inside a `${...}` that is not one of ours, with the count of open inner braces.
    Brace(u32),
    /// Inside `$((`, with the count of open inner parentheses.
    Arith(u32),
}

/// Where a substitution stands, once the lexer has decided.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spot {
    Bare,
    Double,
    Single,
    /// Somewhere the lexer cannot be sure of: a bare `${AGENTCOM_V_NAME}`.
    Unsure,
    /// Not expanded by the shell: left as written.
    Literal,
}

struct Heredoc {
    delim: String,
    strip_tabs: bool,
    quoted: bool,
}

struct Lexer<'a> {
    s: Vec<char>,
    i: usize,
    out: String,
    vars: &'a WakeVars,
    mode: Mode,
    stack: Vec<Ctx>,
    /// Seen a construct shells disagree on: every later substitution is [`Spot::Unsure`].
    poisoned: bool,
    used: [bool; VAR_NAMES.len()],
    heredocs: Vec<Heredoc>,
    /// Whether the next character of unquoted code starts a word (so `#` starts a comment).
    word_start: bool,
}

/// Render; also says which variables the text refers to through the environment.
pub(crate) fn render(template: &str, vars: &WakeVars, mode: Mode) -> (String, [bool; VAR_NAMES.len()]) {
    let mut lx = Lexer::new(template, vars, mode);
    lx.run();
    (replace_nul(&lx.out), lx.used)
}

impl<'a> Lexer<'a> {
    fn new(template: &str, vars: &'a WakeVars, mode: Mode) -> Lexer<'a> {
        Lexer {
            s: template.chars().collect(),
            i: 0,
            out: String::with_capacity(template.len() + 64),
            vars,
            mode,
            stack: vec![Ctx::Bare],
            poisoned: false,
            used: [false; VAR_NAMES.len()],
            heredocs: Vec::new(),
            word_start: true,
        }
    }

    /// At a backtick in certain, unquoted code whose content has no `\`: the shell parses the
    /// content as a script of its own, so it is rendered as one, then `\` and backticks in the
    /// result are escaped for the backquote. Returns false (and does nothing) otherwise.
    fn plain_backtick(&mut self) -> bool {
        if !self.certain() || self.stack.contains(&Ctx::Double) {
            return false;
        }
        let mut end = self.i + 1;
        loop {
            match self.s.get(end) {
                Some('`') => break,
                Some('\\') | None => return false,
                Some(_) => end += 1,
            }
        }
        let inner: String = self.s[self.i + 1..end].iter().collect();
        let mut sub = Lexer::new(&inner, self.vars, self.mode);
        sub.run();
        for (mine, theirs) in self.used.iter_mut().zip(sub.used) {
            *mine |= theirs;
        }
        self.poisoned |= sub.poisoned;
        self.out.push('`');
        for c in sub.out.chars() {
            if c == '\\' || c == '`' {
                self.out.push('\\');
            }
            self.out.push(c);
        }
        self.out.push('`');
        self.i = end + 1;
        true
    }
    fn peek(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    fn copy(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(c) = self.peek(0) {
                self.out.push(c);
                self.i += 1;
            }
        }
    }

    /// `${NAME}` at the cursor, NAME one of ours: its index and length in chars.
    fn var_here(&self) -> Option<(usize, usize)> {
        if self.peek(0) != Some('$') || self.peek(1) != Some('{') {
            return None;
        }
        let mut name = String::new();
        let mut k = 2;
        loop {
            match self.peek(k)? {
                '}' => break,
                c if c.is_ascii_uppercase() || c == '_' => name.push(c),
                _ => return None,
            }
            k += 1;
        }
        let index = VAR_NAMES.iter().position(|n| *n == name)?;
        Some((index, k + 1))
    }

    /// Whether every enclosing context is one the quoting rules are exact for.
    fn certain(&self) -> bool {
        !self.poisoned
            && self
                .stack
                .iter()
                .all(|c| matches!(c, Ctx::Bare | Ctx::Sub(_) | Ctx::Double))
    }

    fn emit(&mut self, index: usize, spot: Spot) {
        let spot = match spot {
            Spot::Literal => Spot::Literal,
            _ if self.poisoned => Spot::Unsure,
            s => s,
        };
        if spot == Spot::Literal {
            self.out.push_str("${");
            self.out.push_str(VAR_NAMES[index]);
            self.out.push('}');
            return;
        }
        if self.mode == Mode::EnvRef || spot == Spot::Unsure {
            self.used[index] = true;
            let r = format!("${{{}}}", env_name(VAR_NAMES[index]));
            match (self.mode, spot) {
                (_, Spot::Unsure) => self.out.push_str(&r),
                (_, Spot::Bare) => self.out.push_str(&format!("\"{r}\"")),
                (_, Spot::Double) => self.out.push_str(&r),
                (_, Spot::Single) => self.out.push_str(&format!("'\"{r}\"'")),
                (_, Spot::Literal) => unreachable!(),
            }
            return;
        }
        let value = self.vars.get(index);
        match spot {
            Spot::Bare => self.out.push_str(&quote_sh(&value)),
            Spot::Double => {
                self.out.push('"');
                self.out.push_str(&quote_sh(&value));
                self.out.push('"');
            }
            Spot::Single => self.out.push_str(&value.replace('\'', "'\\''")),
            Spot::Unsure | Spot::Literal => unreachable!(),
        }
    }

    fn run(&mut self) {
        while let Some(c) = self.peek(0) {
            let top = *self.stack.last().unwrap_or(&Ctx::Bare);
            let certain = self.certain();
            if let Some((index, len)) = self.var_here() {
                let spot = match top {
                    Ctx::Bare | Ctx::Sub(_) if certain => Spot::Bare,
                    Ctx::Double if certain => Spot::Double,
                    _ => Spot::Unsure,
                };
                self.emit(index, spot);
                self.i += len;
                self.word_start = false;
                continue;
            }
            match top {
                Ctx::Bare | Ctx::Sub(_) | Ctx::Arith(_) => {
                    self.word_start = self.code_char(c, top, self.word_start);
                }
                Ctx::Double => match c {
                    '\\' => self.copy(2),
                    '"' => {
                        self.copy(1);
                        self.stack.pop();
                    }
                    '`' => {
                        self.copy(1);
                        self.stack.push(Ctx::Backtick);
                    }
                    '$' => self.dollar(),
                    _ => self.copy(1),
                },
                Ctx::Backtick => match c {
                    '\\' => self.copy(2),
                    '`' => {
                        self.copy(1);
                        self.stack.pop();
                    }
                    _ => self.copy(1),
                },
                Ctx::Brace(depth) => match c {
                    '\\' => self.copy(2),
                    '"' => {
                        self.copy(1);
                        self.stack.push(Ctx::Double);
                    }
                    '\'' => {
                        let in_double = self.stack.len() >= 2
                            && self.stack[..self.stack.len() - 1].contains(&Ctx::Double);
                        if in_double {
                            // Literal in bash, a quote in some other shells.
                            self.poisoned = true;
                            self.copy(1);
                        } else {
                            self.single_quoted();
                        }
                    }
                    '`' => {
                        self.copy(1);
                        self.stack.push(Ctx::Backtick);
                    }
                    '$' => self.dollar(),
                    '{' => {
                        self.copy(1);
                        self.set_top(Ctx::Brace(depth + 1));
                    }
                    '}' => {
                        self.copy(1);
                        if depth == 0 {
                            self.stack.pop();
                        } else {
                            self.set_top(Ctx::Brace(depth - 1));
                        }
                    }
                    _ => self.copy(1),
                },
            }
        }
    }

    fn set_top(&mut self, ctx: Ctx) {
        if let Some(top) = self.stack.last_mut() {
            *top = ctx;
        }
    }

    /// One character (or escape, quoted string, opening) of unquoted shell code: top level,
    /// `$(...)` or `$((...))`. Returns whether the next character starts a word (for `#`).
    fn code_char(&mut self, c: char, top: Ctx, word_start: bool) -> bool {
        match c {
            '\\' => {
                // A line continuation is removed: the word state carries over it.
                let continuation = self.peek(1) == Some('\n');
                self.copy(2);
                continuation && word_start
            }
            '\'' => {
                self.single_quoted();
                false
            }
            '"' => {
                self.copy(1);
                self.stack.push(Ctx::Double);
                false
            }
            '`' => {
                if !self.plain_backtick() {
                    self.copy(1);
                    self.stack.push(Ctx::Backtick);
                }
                false
            }
            '$' => {
                self.word_start = false;
                self.dollar();
                self.word_start
            }
            '#' if word_start && !matches!(top, Ctx::Arith(_)) => {
                while let Some(c) = self.peek(0) {
                    if c == '\n' {
                        break;
                    }
                    self.copy(1);
                }
                true
            }
            '(' => {
                self.copy(1);
                match top {
                    Ctx::Sub(d) => self.set_top(Ctx::Sub(d + 1)),
                    Ctx::Arith(d) => self.set_top(Ctx::Arith(d + 1)),
                    _ => {}
                }
                true
            }
            ')' => {
                self.copy(1);
                match top {
                    Ctx::Sub(0) => {
                        // The end of `$(...)`: a word goes on after it.
                        self.stack.pop();
                        false
                    }
                    Ctx::Sub(d) => {
                        self.set_top(Ctx::Sub(d - 1));
                        true
                    }
                    Ctx::Arith(0) => {
                        if self.peek(0) == Some(')') {
                            self.copy(1);
                        }
                        self.stack.pop();
                        false
                    }
                    Ctx::Arith(d) => {
                        self.set_top(Ctx::Arith(d - 1));
                        true
                    }
                    _ => true,
                }
            }
            '<' if self.peek(1) == Some('<')
                && self.peek(2) != Some('<')
                && !matches!(top, Ctx::Arith(_)) =>
            {
                self.heredoc_operator();
                false
            }
            '\n' => {
                self.copy(1);
                if !self.heredocs.is_empty() {
                    self.heredoc_bodies();
                }
                true
            }
            _ => {
                self.copy(1);
                c.is_whitespace() || ";&|<>".contains(c)
            }
        }
    }

    /// At a `'` in unquoted code: the single-quoted string through its closing `'`.
    fn single_quoted(&mut self) {
        let certain = self.certain();
        self.copy(1);
        while let Some(c) = self.peek(0) {
            if c == '\'' {
                self.copy(1);
                return;
            }
            if let Some((index, len)) = self.var_here() {
                self.emit(index, if certain { Spot::Single } else { Spot::Unsure });
                self.i += len;
            } else {
                self.copy(1);
            }
        }
    }

    /// At a `$` that is not one of our variables.
    fn dollar(&mut self) {
        match self.peek(1) {
            Some('$') => self.copy(2),
            Some('{') => {
                self.copy(2);
                self.stack.push(Ctx::Brace(0));
            }
            Some('(') if self.peek(2) == Some('(') => {
                self.copy(3);
                self.stack.push(Ctx::Arith(0));
            }
            Some('(') => {
                self.copy(2);
                self.stack.push(Ctx::Sub(0));
                // A command starts: `$(# ...` is a comment.
                self.word_start = true;
            }
            Some('\'') if !matches!(self.stack.last(), Some(Ctx::Double)) => {
                // bash's $'...' (escapes, `\'` does not end it); dash reads `$` then '...'.
                // Nothing in it is expanded by either; what follows may be read differently.
                self.poisoned = true;
                self.copy(2);
                while let Some(c) = self.peek(0) {
                    match c {
                        '\\' => self.copy(2),
                        '\'' => {
                            self.copy(1);
                            break;
                        }
                        _ => self.copy(1),
                    }
                }
            }
            _ => self.copy(1),
        }
    }

    /// At `<<`: the operator and its delimiter word; the body follows the next newline.
    fn heredoc_operator(&mut self) {
        self.copy(2);
        let strip_tabs = self.peek(0) == Some('-');
        if strip_tabs {
            self.copy(1);
        }
        while matches!(self.peek(0), Some(' ') | Some('\t')) {
            self.copy(1);
        }
        let mut delim = String::new();
        let mut quoted = false;
        while let Some(c) = self.peek(0) {
            if c.is_whitespace() || ";&|<>()".contains(c) {
                break;
            }
            match c {
                '\'' => {
                    quoted = true;
                    self.copy(1);
                    while let Some(c) = self.peek(0) {
                        self.copy(1);
                        if c == '\'' {
                            break;
                        }
                        delim.push(c);
                    }
                }
                '"' => {
                    quoted = true;
                    self.copy(1);
                    while let Some(c) = self.peek(0) {
                        if c == '\\' {
                            if let Some(n) = self.peek(1) {
                                delim.push(n);
                            }
                            self.copy(2);
                            continue;
                        }
                        self.copy(1);
                        if c == '"' {
                            break;
                        }
                        delim.push(c);
                    }
                }
                '\\' => {
                    quoted = true;
                    if let Some(n) = self.peek(1) {
                        delim.push(n);
                    }
                    self.copy(2);
                }
                _ => {
                    delim.push(c);
                    self.copy(1);
                }
            }
        }
        self.heredocs.push(Heredoc {
            delim,
            strip_tabs,
            quoted,
        });
    }

    /// Right after a newline with here-documents pending: their bodies, in order. Variables in
    /// an unquoted body become `${AGENTCOM_V_NAME}` (quotes mean nothing there).
    fn heredoc_bodies(&mut self) {
        let docs = std::mem::take(&mut self.heredocs);
        for doc in docs {
            loop {
                let start = self.i;
                if start >= self.s.len() {
                    break;
                }
                let end = self.s[start..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(self.s.len(), |p| start + p);
                let line: String = self.s[start..end].iter().collect();
                let check = if doc.strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    &line
                };
                if check == doc.delim {
                    self.copy(end - start + 1);
                    break;
                }
                if doc.quoted {
                    self.copy(end - start);
                } else {
                    while self.i < end {
                        if self.peek(0) == Some('\\') {
                            self.copy(2);
                        } else if let Some((index, len)) = self.var_here() {
                            self.emit(index, Spot::Unsure);
                            self.i += len;
                        } else {
                            self.copy(1);
                        }
                    }
                }
                // The newline (a `\` just before it may already have taken it).
                if self.i == end {
                    self.copy(1);
                }
            }
        }
    }
}
