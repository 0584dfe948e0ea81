#!/usr/bin/env python3
"""List the commands that shell scripts (and a Makefile's recipes) run on the host.

    scripts/commands.py FILE...

Prints one line per command and place, "COMMAND<TAB>FILE:LINE", for every word in a command
position: the first word of a simple command (after assignments and redirections), also after
`|`, `;`, `&&`, `(`, `$(`, `then`, `do` and the like, and the command that `exec`, `command`,
`time`, `setsid`, `timeout` and `env` run. Quoted text is skipped, except the command
substitutions inside double quotes: a quoted string is a guest's script (vm.sh) or a message,
not a host command. Here-documents are skipped too (a guest's init, Python). Words that
start with `$` or `"`, and relative paths (the project's own scripts), are not reported;
absolute paths are (`/usr/bin/rustc`). Case patterns, `for` lists, arrays, `[[ ]]` and
`(( ))`, and the functions the files define are not commands. Builtins are reported: the
caller tells them apart (`type -t`).

It is a lint's tokenizer, not a shell: check.sh compares its output with scripts/tools.txt.
"""
import re
import sys

SEPARATORS = {"|", "||", "&&", ";", ";;", "&", "(", ")", "{", "}", "!", "\n", "|&"}
# Keywords after which a command follows.
LEADING = {"if", "then", "else", "elif", "do", "while", "until", "!", "time"}
KEYWORDS = LEADING | {"fi", "done", "esac", "in", "function", "case", "for", "select", "[[", "]]"}
# Commands that run the command after their own options (and, for timeout, a duration).
WRAPPERS = {"exec", "command", "setsid", "timeout", "env", "nohup", "nice", "builtin"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
REDIRECT = re.compile(r"^[0-9]*(<<<|<>|>>|>&|<&|&>>|&>|>\||<|>)")


class Scanner:
    def __init__(self, text, path, line=1):
        self.s = text
        self.i = 0
        self.path = path
        self.line = line
        self.out = []
        self.heredocs = []  # delimiters (and strip-tabs flags) whose bodies start next line
        self.functions = set()
        self.backticks = 0  # inside `...`: a backtick ends a word

    def peek(self, k=0):
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def advance(self, n=1):
        for _ in range(n):
            if self.peek() == "\n":
                self.line += 1
            self.i += 1

    def skip_heredoc_bodies(self):
        """Called just after a newline: skips the bodies of the here-documents opened on the
        line that ended."""
        for delim, strip in self.heredocs:
            while self.i < len(self.s):
                end = self.s.find("\n", self.i)
                end = len(self.s) if end < 0 else end
                body_line = self.s[self.i:end]
                if strip:
                    body_line = body_line.lstrip("\t")
                self.advance(end + 1 - self.i)
                if body_line == delim:
                    break
        self.heredocs = []

    def single_quoted(self):
        self.advance()  # '
        while self.i < len(self.s) and self.peek() != "'":
            self.advance()
        self.advance()

    def double_quoted(self):
        """Skips a double-quoted string, scanning the command substitutions in it."""
        self.advance()  # "
        while self.i < len(self.s) and self.peek() != '"':
            c = self.peek()
            if c == "\\":
                self.advance(2)
            elif c == "$" and self.peek(1) == "(" and self.peek(2) != "(":
                self.advance(2)
                self.substitution()
            elif c == "$" and self.peek(1) == "(":
                self.arithmetic()
            elif c == "$" and self.peek(1) == "{":
                self.braced()
            elif c == "`":
                self.advance()
                self.substitution(end="`")
            else:
                self.advance()
        self.advance()

    def braced(self):
        """Skips `${...}`, nested braces and quotes included."""
        self.advance(2)
        depth = 1
        while self.i < len(self.s) and depth:
            c = self.peek()
            if c == "\\":
                self.advance(2)
                continue
            if c == "'":
                self.single_quoted()
                continue
            if c == '"':
                self.double_quoted()
                continue
            if c == "$" and self.peek(1) == "{":
                self.advance(2)
                depth += 1
                continue
            if c == "}":
                depth -= 1
            self.advance()

    def arithmetic(self):
        """Skips `$((...))`, scanning the command substitutions in it."""
        self.advance(3)
        depth = 2
        while self.i < len(self.s) and depth:
            c = self.peek()
            if c == "$" and self.peek(1) == "(" and self.peek(2) != "(":
                self.advance(2)
                self.substitution()
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            self.advance()

    def substitution(self, end=")"):
        """Scans a command substitution as a script of its own, up to its closing `)`."""
        self.backticks += end == "`"
        self.commands(end)
        self.backticks -= end == "`"
        self.advance()  # ) or `

    def word(self):
        """Reads one word (unquoted parts kept, quoted ones as '"'); returns it."""
        start_line = self.line
        w = []
        while self.i < len(self.s):
            c = self.peek()
            if c in " \t\n;&|()<>" or (c in "{}" and not w) or (c == "`" and self.backticks):
                break
            if c == "\\":
                if self.peek(1) == "\n":
                    self.advance(2)
                    break
                w.append(self.peek(1))
                self.advance(2)
            elif c == "'":
                self.single_quoted()
                w.append('"')
            elif c == '"':
                self.double_quoted()
                w.append('"')
            elif c == "$" and self.peek(1) == "(" and self.peek(2) == "(":
                self.arithmetic()
                w.append("$")
            elif c == "$" and self.peek(1) == "(":
                self.advance(2)
                self.substitution()
                w.append("$")
            elif c == "$" and self.peek(1) == "{":
                self.braced()
                w.append("$")
            elif c == "`":
                self.advance()
                self.substitution(end="`")
                w.append("$")
            else:
                w.append(c)
                self.advance()
        return "".join(w), start_line

    def operator(self):
        for op in ("&&", "||", ";;", "|&", "<<<", "<<-", "<<", ">>", ">&", "<&", "&>", "<", ">"):
            if self.s.startswith(op, self.i):
                self.advance(len(op))
                return op
        c = self.peek()
        self.advance()
        return c

    def commands(self, end=None):
        """Scans commands up to `end` (a closing character at depth 0) or the end of text."""
        at_command = True
        wrapper = None  # the wrapper whose command comes next, and what it has skipped
        case_depth = []  # for each open `case`: are we in its patterns?
        skip_until = None  # `for` lists: words up to `do`
        depth = 0
        while self.i < len(self.s):
            c = self.peek()
            if end and depth == 0 and c == end:
                return
            if c in " \t":
                self.advance()
                continue
            if c == "\\" and self.peek(1) == "\n":
                self.advance(2)
                continue
            if c == "#":
                while self.i < len(self.s) and self.peek() != "\n":
                    self.advance()
                continue
            if c == "\n":
                self.advance()
                self.skip_heredoc_bodies()
                if not wrapper:
                    at_command = True
                continue
            named_fd = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}[<>]").match(self.s, self.i)
            if named_fd:
                self.advance(named_fd.end() - 1 - self.i)  # {fd}>file: the redirection follows
                continue
            if c == "(" and self.peek(1) == "(" and at_command:
                self.arithmetic_command()
                at_command = False
                continue
            if c in ";&|()<>":
                op = self.operator()
                if op in ("<<", "<<-"):
                    while self.peek() in " \t":
                        self.advance()
                    self.heredocs.append((self.delimiter(), op == "<<-"))
                    continue
                if op in ("<", ">", ">>", ">&", "<&", "&>", "<<<"):
                    while self.peek() in " \t":
                        self.advance()
                    self.word()  # the redirection's target
                    continue
                if op == "(":
                    depth += 1
                elif op == ")":
                    depth -= 1
                    if case_depth and case_depth[-1]:
                        case_depth[-1] = False  # the pattern ended: a command follows
                if op == ";;" and case_depth:
                    case_depth[-1] = True
                at_command, wrapper = True, None
                continue
            start = self.i
            w, line = self.word()
            if self.i == start:
                self.advance()
                continue
            if w.isdigit() and self.peek() in "<>":
                continue  # a descriptor's number: the redirection follows
            if ASSIGNMENT.match(w) and w.endswith("=") and self.peek() == "(":
                self.array()  # name=(words...), also after `local`
                continue
            if REDIRECT.match(w):
                if re.fullmatch(r"[0-9]*(<|>|>>|&>)", w):
                    while self.peek() in " \t":
                        self.advance()
                    self.word()
                continue
            if skip_until:
                if w == skip_until:
                    skip_until = None
                    at_command = True
                continue
            if case_depth and case_depth[-1]:
                if w == "esac":
                    case_depth.pop()
                continue  # a pattern
            if w == "esac" and case_depth:
                case_depth.pop()
                continue
            if not at_command:
                if w in ("in",) and case_depth and case_depth[-1] is None:
                    case_depth[-1] = True
                continue
            if w == "case":
                case_depth.append(None)  # its word, then `in`
                at_command = False
                continue
            if w in ("for", "select"):
                skip_until = "do"
                continue
            if w == "[[":
                self.test_command()
                at_command = False
                continue
            if w in LEADING or w in ("{", "}"):
                continue
            if w in KEYWORDS:
                at_command = w in ("then", "do", "else")
                continue
            if ASSIGNMENT.match(w):
                continue  # VAR=value before a command, or alone
            if wrapper:
                if w.startswith("-"):
                    if wrapper[0] == "timeout" and w in ("-k", "-s", "--kill-after", "--signal"):
                        self.word_after_space()
                    continue
                if wrapper[0] == "timeout" and not wrapper[1]:
                    wrapper = ("timeout", True)  # the duration
                    continue
                wrapper = None
            if self.peek() == "(" and self.peek(1) == ")":
                self.functions.add(w)  # name() { ...: a function definition
                continue
            self.report(w, line)
            if w in WRAPPERS:
                wrapper = (w, False)
                continue
            at_command = False
        return

    def arithmetic_command(self):
        """Skips `((...))`."""
        self.advance(2)
        depth = 2
        while self.i < len(self.s) and depth:
            c = self.peek()
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            self.advance()

    def array(self):
        """Skips an array's `(words...)`, quotes and substitutions included."""
        self.advance()  # (
        while self.i < len(self.s) and self.peek() != ")":
            c = self.peek()
            if c in " \t\n":
                self.advance()
                if c == "\n":
                    self.skip_heredoc_bodies()
            elif c == "#":
                while self.i < len(self.s) and self.peek() != "\n":
                    self.advance()
            else:
                self.word()
                if self.peek() not in " \t\n)":
                    self.advance()
        self.advance()

    def test_command(self):
        """Skips a `[[ ... ]]` test up to its `]]` (its words are no commands, and a regex
        in it may hold `(` and `|`), scanning the substitutions in it."""
        while self.i < len(self.s):
            c = self.peek()
            if self.s.startswith("]]", self.i):
                self.advance(2)
                return
            if c in " \t\n":
                self.advance()
            else:
                self.word()
                if self.peek() in ";&|()<>" and not self.s.startswith("]]", self.i):
                    self.advance()

    def word_after_space(self):
        while self.peek() in " \t":
            self.advance()
        self.word()

    def delimiter(self):
        """A here-document's delimiter word, its quotes taken out."""
        start = self.i
        while self.i < len(self.s) and self.peek() not in " \t\n;&|<>()":
            self.advance()
        return re.sub(r"[\"'\\]", "", self.s[start:self.i])

    def report(self, w, line):
        if not w or w.startswith(("$", '"', "-")) or "$" in w or '"' in w:
            return
        if "/" in w and not w.startswith("/"):
            return  # the project's own scripts, by relative path
        if w in ("[", "[[", "]]", "]"):
            return
        self.out.append((w, f"{self.path}:{line}"))


def makefile_recipes(text):
    """The recipe lines of a Makefile as a shell script (a line per recipe line, so that
    line numbers stay right), `$$` as `$` and make's own `$(...)` as a plain word."""
    out = []
    for line in text.split("\n"):
        if line.startswith("\t"):
            line = line[1:].lstrip("@+-")
            line = line.replace("$(MAKE)", "make")
            line = re.sub(r"\$\(([A-Z_]+)\)", r"make_\1", line)
            line = line.replace("$$", "$")
            out.append(line)
        else:
            out.append("")
    return "\n".join(out)


def main(paths):
    seen, functions = [], set()
    for path in paths:
        text = open(path).read()
        if path.endswith("Makefile"):
            text = makefile_recipes(text)
        sc = Scanner(text, path)
        sc.commands()
        seen += sc.out
        functions |= sc.functions
    # A function of any of the files (lib.sh's are called from check.sh) is no command.
    for w, where in seen:
        if w not in functions:
            print(f"{w}\t{where}")


if __name__ == "__main__":
    main(sys.argv[1:])
